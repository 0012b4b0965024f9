"""The text log: one event is one line, whatever the strings it quotes."""

import logging

from vip_sidecar.log import MAX_MESSAGE, JsonFormatter, SyslogFormatter, TextFormatter, escape


def record(message, **fields):
    rec = logging.LogRecord("vip-sidecar", logging.WARNING, __file__, 1, message, None, None)
    rec.fields = fields
    return rec


def test_newlines_and_control_characters_cannot_forge_a_log_line():
    forged = "ok\n2026-01-01T00:00:00.000000: [ERROR] Switching to state: MASTER\x1b[2J\u2028"
    for fmt in (TextFormatter(), SyslogFormatter()):
        line = fmt.format(record(f"script said {forged}", vip="a\rb"))
        assert "\n" not in line and "\r" not in line and "\x1b" not in line
        assert "\u2028" not in line
        assert "[a\\rb] script said ok\\n2026" in line and "\\x1b[2J\\u2028" in line


def test_long_messages_are_bounded():
    line = TextFormatter().format(record("x" * 1_000_000))
    assert len(line) < MAX_MESSAGE + 100 and line.endswith("(995904 more characters)")
    assert len(JsonFormatter().format(record("x" * 1_000_000))) < MAX_MESSAGE + 200


def test_plain_text_is_unchanged():
    assert escape("Switching to state: MASTER (é, 10.0.0.1)") == (
        "Switching to state: MASTER (é, 10.0.0.1)"
    )
