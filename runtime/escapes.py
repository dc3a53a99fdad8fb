"""Terminal control sequences taken out of text we did not write: model output, and strings from the
model file (general.name, a template's messages) that are printed to a terminal.

An escape sequence in such text would act on the user's terminal: set the window title, clear the
screen, move the cursor to overwrite what is shown, write the clipboard (OSC 52), and on some
terminals more. Removed: ECMA-48 escape sequences (CSI `ESC [ ... final`, OSC `ESC ] ... BEL/ST`, DCS/SOS/
PM/APC strings `ESC P|X|^|_ ... ST`, and the two-character `ESC x` forms), their 8-bit C1 forms
(U+009B CSI, U+009D OSC, ...), and every other C0/C1 control character and DEL, except newline and tab.
Text that only looks odd (bidi marks, combining characters) is left alone.

`TerminalFilter` does this on a stream (a sequence can be split across tokens); `printable` on one
string. Piped output is not filtered: `-p` writes the model's bytes as they are when stdout is not a
terminal (the program reading it decides), and filters them when it is one.
"""
from __future__ import annotations

ESC, BEL = "\x1b", "\x07"
_KEEP = "\n\t"
_STRING_INTRODUCERS = {"]": "osc", "P": "str", "X": "str", "^": "str", "_": "str"}   # after ESC
_C1_STRINGS = {"\x9d": "osc", "\x90": "str", "\x98": "str", "\x9e": "str", "\x9f": "str"}
_MAX_SEQUENCE = 4096   # a sequence never ended swallows at most this much text (the rest is printed)


def _control(c: str) -> bool:
    o = ord(c)
    return (o < 0x20 and c not in _KEEP) or 0x7F <= o <= 0x9F


class TerminalFilter:
    """Text in, the same text without terminal control sequences out; state carries across feeds."""

    def __init__(self):
        self.state = "text"     # text | esc (after ESC) | csi | osc | str (DCS/SOS/PM/APC) | st (ESC inside a string)
        self.swallowed = 0

    def feed(self, text: str) -> str:
        if self.state == "text" and not any(_control(c) for c in text):
            return text                                      # the common case: nothing to do
        out = []
        for c in text:
            state = self.state
            if state == "text":
                if c == ESC:
                    self._enter("esc")
                elif c == "\x9b":
                    self._enter("csi")
                elif c in _C1_STRINGS:
                    self._enter(_C1_STRINGS[c])
                elif not _control(c):
                    out.append(c)
                continue
            self.swallowed += 1
            if self.swallowed > _MAX_SEQUENCE:             # never ended: give up on it, print what follows
                self.state = "text"
                if not _control(c):
                    out.append(c)
            elif state == "esc":
                if c == "[":
                    self.state = "csi"
                elif c in _STRING_INTRODUCERS:
                    self.state = _STRING_INTRODUCERS[c]
                elif 0x20 <= ord(c) <= 0x2F:                # intermediate bytes: ESC ( B and the like
                    pass
                else:
                    self.state = "text"                     # ESC and its one final character are gone
            elif state == "csi":
                if 0x40 <= ord(c) <= 0x7E:
                    self.state = "text"
                elif c == ESC:
                    self._enter("esc")
            elif state in ("osc", "str"):
                if c == BEL and state == "osc" or c == "\x9c":
                    self.state = "text"
                elif c == ESC:
                    self.state = "st"
            elif c == "\\":                                 # state st: ESC \ ends the string
                self.state = "text"
            else:                                           # ESC and something else: a new sequence
                self._enter("esc")
                self.feed(c)                                # (swallowed whatever it is)
        return "".join(out)

    def _enter(self, state: str) -> None:
        self.state = state
        self.swallowed = 0


def printable(text: str) -> str:
    """One string (a name, a message) without terminal control sequences."""
    return TerminalFilter().feed(text)
