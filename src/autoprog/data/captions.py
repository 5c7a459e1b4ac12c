"""Caption templates for text-to-image fine-tuning: class captions, Unique Stage Identifiers, DreamBooth.

Paper Sec. 4.1.2 (Unique Stage Identifier) and Sec. 5.1.1 (datasets):

* A classification dataset has no text, so each image is captioned from its class name:
  ``"a [class name]"`` (Sec. 5.1.1), the name lower-cased (Fashion-MNIST's ``T-shirt/top`` gives
  ``"a t-shirt/top"``, MNIST's ``3`` gives ``"a 3"``).
* With SID, every image of training stage ``k`` is captioned ``"a [class noun], [SID] stage"``, where
  ``[SID]`` is a rare token unique to stage ``k`` (:func:`sid_token`); a new stage switches to a new
  token. Samples are drawn with the last stage's token (:func:`caption` with the last stage id).
* DreamBooth (Ruiz et al. 2023; Sec. 5.3.3): the subject's images are captioned with an identifier
  token, ``"a sks [class noun]"`` (:func:`instance_prompt`), and the prior-preservation images with
  the bare class noun, ``"a [class noun]"`` (:func:`class_prompt`).

Example::

    >>> caption("t-shirt/top", stage_id=None)
    'a t-shirt/top'
    >>> caption("T-shirt/top", stage_id=1)
    'a t-shirt/top, qjv stage'
    >>> with_sid(instance_prompt("dog"), 0)
    'a sks dog, zwx stage'
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from autoprog.errors import ConfigError

__all__ = [
    "DREAMBOOTH_IDENTIFIER",
    "NULL_CAPTION",
    "SID_TOKENS",
    "caption",
    "class_noun",
    "class_prompt",
    "instance_prompt",
    "sid_token",
    "stand_in_words",
    "strip_sid",
    "with_sid",
]

#: One rare token per stage (stage ``k`` uses ``SID_TOKENS[k]``): three-consonant strings that are
#: no English word, in the spirit of DreamBooth's rare-token identifiers. A tokenizer that does not
#: hold one of them as a single token gets it added (see
#: :func:`autoprog.adapters.diffusers_unet.ensure_single_tokens`).
SID_TOKENS: tuple[str, ...] = ("zwx", "qjv", "vkz", "xqp", "jzk", "wvq", "pqx", "kxj", "zqv", "xjw", "qzk", "vxq")  # fmt: skip

#: DreamBooth's identifier token (Ruiz et al. use ``sks``).
DREAMBOOTH_IDENTIFIER = "sks"

#: The unconditional caption of classifier-free guidance (Stable Diffusion's empty prompt).
NULL_CAPTION = ""

_SID_SUFFIX = " stage"


def sid_token(stage_id: int) -> str:
    """The rare token that identifies training stage ``stage_id`` (Sec. 4.1.2).

    Raises:
        ConfigError: more stages than :data:`SID_TOKENS` holds.
    """
    if not 0 <= stage_id < len(SID_TOKENS):
        raise ConfigError(
            f"text-to-image SID has tokens for {len(SID_TOKENS)} stages, got stage {stage_id} "
            "(use fewer --stages, or --no-sid)"
        )
    return SID_TOKENS[stage_id]


def class_noun(name: str) -> str:
    """A class name as it appears in a caption: stripped and lower-cased."""
    noun = " ".join(name.split()).lower()
    if not noun:
        raise ConfigError(f"class name {name!r} is empty: it cannot caption an image")
    return noun


def with_sid(prompt: str, stage_id: int | None) -> str:
    """``"[prompt], [SID] stage"`` for stage ``stage_id``; ``prompt`` unchanged when ``None`` (no SID)."""
    if stage_id is None:
        return prompt
    return f"{prompt}, {sid_token(stage_id)}{_SID_SUFFIX}"


def strip_sid(text: str) -> str:
    """The caption without its ``", [SID] stage"`` suffix (the prompt that CLIP-T is measured against)."""
    for token in SID_TOKENS:
        suffix = f", {token}{_SID_SUFFIX}"
        if text.endswith(suffix):
            return text[: -len(suffix)]
    return text


def caption(name: str, stage_id: int | None) -> str:
    """The training caption of an image of class ``name`` in stage ``stage_id`` (``None``: no SID).

    ``"a [class noun]"`` (Sec. 5.1.1), with ``", [SID] stage"`` appended under SID (Sec. 4.1.2).
    """
    return with_sid(f"a {class_noun(name)}", stage_id)


def instance_prompt(noun: str, identifier: str = DREAMBOOTH_IDENTIFIER) -> str:
    """DreamBooth's subject caption: ``"a [identifier] [class noun]"`` (``"a sks dog"``)."""
    return f"a {identifier} {class_noun(noun)}"


def class_prompt(noun: str) -> str:
    """DreamBooth's prior-preservation caption: ``"a [class noun]"``."""
    return f"a {class_noun(noun)}"


def stand_in_words(class_names: Iterable[Sequence[str]]) -> list[str]:
    """The caption vocabulary of a stand-in tokenizer: the words and punctuation of every caption it
    must encode, with and without SID, and DreamBooth's identifier.

    Args:
        class_names: lists of class names (one list per dataset), e.g. Fashion-MNIST's and MNIST's.

    Returns:
        Distinct lower-case words (split on spaces; ``,``, ``-`` and ``/`` are separate words), sorted.
    """
    words = {"a", ",", _SID_SUFFIX.strip(), DREAMBOOTH_IDENTIFIER, *SID_TOKENS}
    for names in class_names:
        for name in names:
            words.update(_split_words(class_noun(name)))
    return sorted(words)


def _split_words(text: str) -> list[str]:
    """Whitespace-separated words with every punctuation character a word of its own (the stand-in
    tokenizer's pre-tokenisation)."""
    out: list[str] = []
    for chunk in text.split():
        word = ""
        for ch in chunk:
            if ch.isalnum():
                word += ch
            else:
                if word:
                    out.append(word)
                out.append(ch)
                word = ""
        if word:
            out.append(word)
    return out
