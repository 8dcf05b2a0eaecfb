"""A row's text as its tokens arrive: what is new since the last token, and where a stop string ends it.

Text is decoded incrementally, as vLLM's `detokenize_incrementally` does: only a window of recent tokens is decoded
twice, without and with the newest tokens, and the difference is the new text. It is taken only once it does not
end in U+FFFD (the first bytes of a character whose other bytes come in later tokens), so each token costs the same
however long the answer. Special tokens are skipped, as `generate_text` does. A tail that could be the start of a
stop string is held back, so a streamed stop string never reaches the client.
"""

from __future__ import annotations

from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase


class TextStream:
    """The growing text of one row; `push` returns the part that is safe to send."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stop: Sequence[str] = ()) -> None:
        self.tokenizer, self.stop = tokenizer, tuple(stop)
        self.token_ids: list[int] = []
        self.text = ""  # the decoded text so far, cut before a stop string once one appears
        self.sent = 0  # characters of `text` returned so far
        self.stopped = False
        self._prefix = self._read = 0  # the window: tokens[prefix:read] decode to the end of `text`

    def push(self, token_id: int) -> str:
        """Add a token; return the new text that can be sent. Sets `stopped` when a stop string appears."""
        if self.stopped:
            return ""
        self.token_ids.append(token_id)
        previous = len(self.text)
        if self._decode_window(final=False) and self._find_stop(previous):
            return self.flush()
        end = max(self.sent, len(self.text) - self._stop_prefix())
        new, self.sent = self.text[self.sent : end], end
        return new

    def flush(self) -> str:
        """The text not sent yet, held back or not, at the end of the row (an unfinished character included)."""
        if not self.stopped:
            self._decode_window(final=True)
        new, self.sent = self.text[self.sent :], len(self.text)
        return new

    def _decode_window(self, final: bool) -> bool:
        """Append the window's new text to `text`, unless it may still change (a character cut short)."""
        known = self._decode(self.token_ids[self._prefix : self._read])
        window = self._decode(self.token_ids[self._prefix :])
        if len(window) <= len(known) or (window.endswith("\ufffd") and not final):
            return False
        self.text += window[len(known) :]
        self._prefix, self._read = self._read, len(self.token_ids)
        return True

    def _stop_prefix(self) -> int:
        """The length of the longest end of `text` that a stop string starts with (held back: it may become one)."""
        ends = (size for stop in self.stop for size in range(1, len(stop)) if self.text.endswith(stop[:size]))
        return max(ends, default=0)

    def _find_stop(self, previous: int) -> bool:
        """Cut `text` before the first stop string that ends in its new part (after `previous` characters)."""
        if not self.stop:
            return False
        start = max(0, previous - max(len(stop) for stop in self.stop) + 1)
        matches = [index for stop in self.stop if (index := self.text.find(stop, start)) >= 0]
        if matches:
            self.text, self.stopped = self.text[: min(matches)], True
        return self.stopped

    def _decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)
