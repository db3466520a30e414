"""Chat templates: a conversation -> the prompt text a chat model was trained on.

A checkpoint's chat template (``tokenizer.chat_template`` in a GGUF file,
``chat_template`` in tokenizer_config.json) is a Jinja template over
``messages`` (a list of {"role", "content"} dicts), ``add_generation_prompt``
and the special tokens' strings (``bos_token``, ``eos_token``, ...).
:class:`ChatTemplate` renders it as transformers' ``apply_chat_template(...,
tokenize=False)`` does (utils/chat_template_utils.py): jinja2's immutable
sandbox with ``trim_blocks`` and ``lstrip_blocks``, the ``loopcontrols``
extension, a ``{% generation %}`` tag that renders its body, and the helpers
``raise_exception`` (here a ValueError), ``strftime_now``, ``tojson`` (no HTML
escaping), ``dict`` and a ``namespace`` refusing underscore names.

jinja2 is imported only when a template is rendered, and is not a required
dependency (``pip install pytransformer[chat]`` brings it).  Without it, a
ChatML template (``<|im_start|>role\\ncontent<|im_end|>\\n`` per message, with
or without a default system message, as SmolLM2's and Qwen2's) is recognised
and rendered by :func:`render_chatml`; any other template is a ValueError
saying to install jinja2.
"""
import re

__all__ = ["ChatTemplate", "apply_chat_template", "chatml_system_prompt", "render_chatml"]


def _lit(text):
    """A Jinja string literal holding ``text`` (a regex), in either quote."""
    return f"(?:'{text}'|\"{text}\")"


_NL = r"(?:\n|\\n)"        # a newline inside a literal: written as is or escaped
_S = r"\s*"
_PLUS = r"\s*\+\s*"


def _tag(body):
    return r"\{%-?\s*" + body + r"\s*-?%\}"


def _out(body):
    return r"\{\{-?\s*" + body + r"\s*-?\}\}"


_ROLE = r"message\[" + _lit("role") + r"\]"
_CONTENT = r"message\[" + _lit("content") + r"\]"
_TURN = _out(_lit(r"<\|im_start\|>") + _PLUS + _ROLE + _PLUS + _lit(_NL) + _PLUS + _CONTENT +
             _PLUS + "(?:" + _lit(r"<\|im_end\|>") + _PLUS + _lit(_NL) + "|" +
             _lit(r"<\|im_end\|>" + _NL) + ")")
_SYSTEM = (_tag(r"if\s+loop\.first\s+and\s+messages\[0\]\[" + _lit("role") + r"\]\s*!=\s*" +
                _lit("system")) +
           _out(f"(?:'<\\|im_start\\|>system{_NL}(?P<sq>[^'\"\\\\]*)<\\|im_end\\|>{_NL}'|"
                f"\"<\\|im_start\\|>system{_NL}(?P<dq>[^'\"\\\\]*)<\\|im_end\\|>{_NL}\")") +
           _tag("endif"))
_CHATML = re.compile(
    _tag(r"for\s+message\s+in\s+messages") + f"(?:{_SYSTEM})?" + _TURN + _tag("endfor") +
    _tag(r"if\s+add_generation_prompt") + _out(_lit(r"<\|im_start\|>assistant" + _NL)) +
    _tag("endif"))


def chatml_system_prompt(template):
    """For a ChatML template: ``(True, default system message or None)``;
    for any other template ``(False, None)``."""
    m = _CHATML.fullmatch(template)
    if m is None:
        return False, None
    system = m.group("sq") if m.group("sq") is not None else m.group("dq")
    return True, system


def _check_messages(messages):
    if not isinstance(messages, (list, tuple)) or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        raise ValueError("messages must be a list of dicts, each with a 'role' string and "
                         "its 'content'")
    if not messages:
        raise ValueError("messages is empty: a chat template needs at least one message")
    # as transformers: keys whose value is None are dropped, the caller's dicts untouched
    return [{k: v for k, v in m.items() if v is not None} for m in messages]


def render_chatml(messages, add_generation_prompt=True, system=None):
    """ChatML without jinja2: each message as ``<|im_start|>{role}\\n{content}
    <|im_end|>\\n``, a first system message ``system`` (when given) unless the
    conversation opens with one, then ``<|im_start|>assistant\\n`` for the
    model's reply."""
    messages = _check_messages(messages)
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m.get("content"), str):
            raise ValueError(f"messages[{i}]['content'] must be a string for a ChatML template")
        if i == 0 and system is not None and m["role"] != "system":
            out.append(f"<|im_start|>system\n{system}<|im_end|>\n")
        out.append(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n")
    if add_generation_prompt:
        out.append("<|im_start|>assistant\n")
    return "".join(out)


def _compile(template):
    """The template compiled as transformers' _compile_jinja_template does."""
    import json
    from datetime import datetime

    import jinja2
    import jinja2.ext
    import jinja2.nodes
    import jinja2.utils
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(jinja2.ext.Extension):
        """``{% generation %}...{% endgeneration %}``: the assistant's part of
        a turn (transformers tracks it for masks); rendered as its body."""
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body) \
                .set_lineno(lineno)

        def _body(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.now().strftime(fmt)

    class TemplateDict:
        def __call__(self, *args, **kwargs):
            return dict(*args, **kwargs)

        def fromkeys(self, *args, **kwargs):
            return dict.fromkeys(*args, **kwargs)

    class TemplateNamespace(jinja2.utils.Namespace):
        def __init__(*args, **kwargs):
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for name in attrs:
                TemplateNamespace._check_name(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name, value):
            TemplateNamespace._check_name(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check_name(name):
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(
                    f"chat templates cannot store underscore-prefixed attributes on a "
                    f"namespace ({name!r})")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[Generation, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals.update(raise_exception=raise_exception, strftime_now=strftime_now,
                       dict=TemplateDict(), namespace=TemplateNamespace)
    try:
        return env.from_string(template)
    except jinja2.exceptions.TemplateError as e:
        raise ValueError(f"the chat template does not compile: {e}") from None


class ChatTemplate:
    """A checkpoint's chat template with its special tokens' strings
    (``bos_token``, ``eos_token``, ``unk_token``, ``pad_token``: what
    transformers passes the template).  ``where`` names the checkpoint in
    error messages.  ``apply(messages, add_generation_prompt=True, **extra)``
    -> the prompt text; ``extra`` variables override the special tokens."""

    def __init__(self, template, special_tokens=None, where="chat template"):
        if not isinstance(template, str):
            raise ValueError(f"{where}: the chat template must be a string, got "
                             f"{type(template).__name__}")
        self.template, self.where = template, where
        self.special_tokens = {k: v for k, v in (special_tokens or {}).items() if v is not None}
        self.is_chatml, self.system = chatml_system_prompt(template)
        self._compiled = None

    def apply(self, messages, add_generation_prompt=True, **extra):
        try:
            import jinja2
        except ImportError:
            jinja2 = None
        if jinja2 is None:
            if not self.is_chatml:
                raise ValueError(f"{self.where}: rendering this chat template needs jinja2 "
                                 f"(pip install jinja2); only ChatML templates are rendered "
                                 f"without it")
            return render_chatml(messages, add_generation_prompt, self.system)
        messages = _check_messages(messages)
        if self._compiled is None:
            try:
                self._compiled = _compile(self.template)
            except ValueError as e:
                raise ValueError(f"{self.where}: {e}") from None
        variables = {**self.special_tokens, **extra}
        try:
            return self._compiled.render(messages=messages, tools=None, documents=None,
                                         add_generation_prompt=bool(add_generation_prompt),
                                         **variables)
        except jinja2.exceptions.TemplateError as e:
            raise ValueError(f"{self.where}: the chat template refused the conversation: "
                             f"{e}") from None

    __call__ = apply


def apply_chat_template(template, messages, add_generation_prompt=True, special_tokens=None,
                        **extra):
    """``ChatTemplate(template, special_tokens).apply(messages,
    add_generation_prompt, **extra)``."""
    return ChatTemplate(template, special_tokens).apply(messages, add_generation_prompt,
                                                        **extra)
