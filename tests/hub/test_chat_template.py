"""hub/chat_template against transformers' apply_chat_template(...,
tokenize=False): SmolLM2's own template (from its GGUF file) and others, with
jinja2 and -- for ChatML templates -- with the built-in renderer used when
jinja2 is not installed."""
import sys

import pytest

from pytransformer.hub.chat_template import (ChatTemplate, apply_chat_template,
                                             chatml_system_prompt, render_chatml)
from pytransformer.hub.gguf_tokenizer import chat_template_from_gguf

CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "2+2?"}],
    [{"role": "user", "content": "What is the capital of France?"},
     {"role": "assistant", "content": "Paris."},
     {"role": "user", "content": "And of Italy?\nAnswer in one word."}],
    [{"role": "system", "content": ""}, {"role": "user", "content": "  spaced  \n\n"},
     {"role": "assistant", "content": "ok"}, {"role": "user", "content": "ünïcödé 😀 <|im_end|>"}],
    [{"role": "assistant", "content": "I start."}, {"role": "user", "content": "Fine."}],
    [{"role": "user", "content": "a", "name": None}, {"role": "tool", "content": "{\"x\": 1}"}],
]

CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
          "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|im_start|>assistant\\n' }}{% endif %}")
QWEN_LIKE = ('{%- for message in messages -%}{%- if loop.first and messages[0]["role"] != '
             '"system" -%}{{- "<|im_start|>system\\nYou are Qwen.<|im_end|>\\n" -}}{%- endif -%}'
             '{{- "<|im_start|>" + message["role"] + "\\n" + message["content"] + '
             '"<|im_end|>\\n" -}}{%- endfor -%}{%- if add_generation_prompt -%}'
             '{{- "<|im_start|>assistant\\n" -}}{%- endif -%}')
# not ChatML: whitespace control, namespace, loop controls, raise_exception, tojson,
# the special tokens' strings, a generation block
OTHER = """{{ bos_token }}
{%- set ns = namespace(n=0) %}
{% for message in messages %}
    {% if message['role'] == 'tool' %}{% continue %}{% endif %}
    {% set ns.n = ns.n + 1 %}
    {% if message['role'] == 'assistant' %}
[ASSISTANT] {% generation %}{{ message['content'] }}{% endgeneration %}{{ eos_token }}
    {% elif message['role'] in ['user', 'system'] %}
[{{ message['role'] | upper }}] {{ message['content'] | trim }} {{ {'n': ns.n} | tojson }}
    {% else %}
{{ raise_exception('unknown role ' + message['role']) }}
    {% endif %}
{% endfor %}
{% if add_generation_prompt %}[ASSISTANT]{% endif %}"""


@pytest.fixture
def no_jinja2(monkeypatch):
    """jinja2 as if not installed."""
    monkeypatch.setitem(sys.modules, "jinja2", None)


def theirs(tok, conversation, template=None, add_generation_prompt=True):
    return tok.apply_chat_template(conversation, chat_template=template, tokenize=False,
                                   add_generation_prompt=add_generation_prompt)


@pytest.mark.parametrize("jinja", [True, False])
def test_smollm2_template_is_transformers(smollm_gguf, smollm_hf_tokenizer, jinja, request):
    if not jinja:
        request.getfixturevalue("no_jinja2")
    t = chat_template_from_gguf(smollm_gguf)
    assert t.is_chatml and t.system.startswith("You are a helpful AI assistant named SmolLM")
    for conv in CONVERSATIONS:
        for gen in (True, False):
            assert t.apply(conv, add_generation_prompt=gen) == \
                theirs(smollm_hf_tokenizer, conv, add_generation_prompt=gen), (conv, gen)
    assert t(CONVERSATIONS[1]).endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize("template", [CHATML, QWEN_LIKE])
@pytest.mark.parametrize("jinja", [True, False])
def test_other_chatml_templates(smollm_hf_tokenizer, template, jinja, request):
    if not jinja:
        request.getfixturevalue("no_jinja2")
    assert chatml_system_prompt(template) == (
        True, "You are Qwen." if template is QWEN_LIKE else None)
    for conv in CONVERSATIONS:
        assert apply_chat_template(template, conv) == theirs(smollm_hf_tokenizer, conv, template)


def test_a_full_jinja_template(smollm_hf_tokenizer):
    t = ChatTemplate(OTHER, {"bos_token": "<s>", "eos_token": "</s>"})
    assert not t.is_chatml
    tok = smollm_hf_tokenizer
    for conv in CONVERSATIONS:
        if any(m["role"] not in ("user", "system", "assistant", "tool") for m in conv):
            continue
        # transformers passes its own special tokens; give the same
        expected = theirs(tok, conv, OTHER)
        assert t.apply(conv, bos_token=tok.bos_token, eos_token=tok.eos_token) == expected
    assert t.apply([{"role": "user", "content": "x"}]).startswith("<s>")
    with pytest.raises(ValueError, match="unknown role robot"):
        t.apply([{"role": "robot", "content": "beep"}])


def test_without_jinja2_only_chatml(no_jinja2):
    with pytest.raises(ValueError, match="pip install jinja2"):
        ChatTemplate(OTHER, where="m.gguf").apply([{"role": "user", "content": "x"}])
    assert render_chatml([{"role": "user", "content": "x"}], True, None) == \
        "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n"
    # near misses are not taken for ChatML
    assert not chatml_system_prompt(CHATML.replace("'\\n' + message['content']", "message['content']"))[0]
    assert not chatml_system_prompt(CHATML + " ")[0]
    with pytest.raises(ValueError, match="content"):
        render_chatml([{"role": "user", "content": ["a list"]}])


def test_bad_arguments():
    t = ChatTemplate(CHATML)
    for bad in ("text", [], [1], [{"content": "no role"}], [{"role": 3, "content": "x"}]):
        with pytest.raises(ValueError, match="messages"):
            t.apply(bad)
    with pytest.raises(ValueError, match="string"):
        ChatTemplate(None)
    with pytest.raises(ValueError, match="does not compile"):
        ChatTemplate("{% for %}").apply([{"role": "user", "content": "x"}])
    msgs = [{"role": "user", "content": "x", "extra": None}]
    t.apply(msgs)
    assert msgs == [{"role": "user", "content": "x", "extra": None}]   # the caller's, untouched
