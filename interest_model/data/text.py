"""Item text: title normalization (to link the same item across platforms) and the text
template an item encoder reads."""

from __future__ import annotations

import re
import unicodedata
from typing import Any, Mapping, Sequence

_ARTICLES = ("the", "a", "an", "la", "le", "les", "il", "el", "das", "der", "die")
_TRAILING_ARTICLE = re.compile(r"^(.*),\s*(" + "|".join(_ARTICLES) + r")$", re.IGNORECASE)
_NON_WORD = re.compile(r"[^\w\s]+")
_SPACE = re.compile(r"\s+")
_FIELD = re.compile(r"{(\w+)}")


def normalize_title(title: str) -> str:
    """Case-, accent-, punctuation- and article-insensitive form of a title.

    'Shawshank Redemption, The' and 'The Shawshank Redemption' give the same string, so do
    'Amélie' and 'Amelie'.
    """
    text = unicodedata.normalize("NFKD", title)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).strip()
    # An alternate title in trailing parentheses ('Seven (Se7en)') stays; a moved article is
    # put back in front, whether the title has an alternate part or not.
    main, sep, rest = text.partition(" (")
    m = _TRAILING_ARTICLE.match(main.strip())
    if m:
        main = f"{m.group(2)} {m.group(1)}"
    text = main + (sep + rest if sep else "")
    text = _NON_WORD.sub(" ", text.lower())
    return _SPACE.sub(" ", text).strip()


def link_key(title: str | None, year: str | None) -> str | None:
    """The id shared by the same item on different platforms: normalized title + year."""
    if not title:
        return None
    norm = normalize_title(title)
    if not norm:
        return None
    return f"{norm} ({year})" if year else norm


def render_text(template: Sequence[str], fields: Mapping[str, Any], separator: str = "; ",
                max_chars: int | None = None) -> str:
    """Fill a template of segments like ``"Title: {title}"``; a segment whose fields are all
    empty is left out, lists are joined with ', '."""
    parts = []
    for segment in template:
        names = _FIELD.findall(segment)
        values = {name: _as_text(fields.get(name)) for name in names}
        if names and not any(values.values()):
            continue
        parts.append(_FIELD.sub(lambda m: values[m.group(1)], segment))
    text = separator.join(parts)
    if max_chars is not None and len(text) > max_chars:
        text = text[: max_chars - 1].rstrip() + "…"
    return text


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value != value:  # NaN
        return ""
    if isinstance(value, (list, tuple)) or (hasattr(value, "tolist") and not isinstance(value, str)):
        items = value.tolist() if hasattr(value, "tolist") else value
        return ", ".join(str(v) for v in items if v not in (None, ""))
    return str(value).strip()
