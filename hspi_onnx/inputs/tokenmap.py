"""Printed tokens back to token ids, and ids to what servers print: the byte-level BPE
vocabulary of a Hugging Face tokenizer inverted (GPT-2's byte alphabet).

A server prints a token as text (llama.cpp: its bytes decoded with invalid UTF-8 dropped;
Hugging Face: replaced by U+FFFD), some also with its UTF-8 ``bytes``. :class:`TokenMap` holds
every id's bytes and answers which ids print a given text or bytes: one id, the candidates when
several print the same, or None when too many do to name.
"""

from __future__ import annotations

from hspi_onnx.errors import HspiError


class UnknownToken(HspiError):
    """A printed token that no id of the tokenizer prints."""


def _byte_decoder() -> dict[str, int]:
    """The byte-level BPE alphabet (GPT-2's): printable stand-ins for the 256 bytes, inverted."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


class TokenMap:
    """Printed tokens (text, or UTF-8 bytes) -> the ids that print so, for one tokenizer."""

    MAX_CANDIDATES = 64

    def __init__(self, tokenizer) -> None:
        decoder = _byte_decoder()
        special = set(getattr(tokenizer, "all_special_ids", []) or [])
        self.pieces: list[bytes] = []
        for i, tok in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))):
            tok = tok or ""
            if i in special or not all(c in decoder for c in tok):
                piece = tok.encode("utf-8")  # special and added tokens print as their text
            else:
                piece = bytes(decoder[c] for c in tok)
            self.pieces.append(piece)
        self.by_bytes: dict[bytes, list[int]] = {}
        self.by_text: dict[str, list[int]] = {}
        for i, piece in enumerate(self.pieces):
            self.by_bytes.setdefault(piece, []).append(i)
            for text in {piece.decode("utf-8", "ignore"), piece.decode("utf-8", "replace")}:
                self.by_text.setdefault(text, []).append(i)

    def lookup(self, text, raw_bytes) -> int | list[int] | None:
        """The id a printed token stands for; a sorted list of candidates when several print the
        same; None when too many do to say (any id fits). UnknownToken when none does."""
        if isinstance(raw_bytes, list) and raw_bytes and all(isinstance(b, int) and 0 <= b < 256 for b in raw_bytes):
            ids = self.by_bytes.get(bytes(raw_bytes), [])
        elif isinstance(text, str):
            ids = self.by_text.get(text, [])
        else:
            raise UnknownToken("a token came without its text or bytes")
        if not ids:
            shown = text if isinstance(text, str) else raw_bytes
            raise UnknownToken(
                f"token {str(shown)[:30]!r} is no token of the model's tokenizer (another model served?)"
            )
        if len(ids) == 1:
            return ids[0]
        return sorted(set(ids)) if len(set(ids)) <= self.MAX_CANDIDATES else None
