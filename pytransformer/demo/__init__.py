"""The demo: written dates to ISO dates (:mod:`.task`), and the small
Seq2SeqTransformer trained on it that ships in this folder
(demo_model.safetensors, written by scripts/train_demo.py)."""
