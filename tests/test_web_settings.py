"""The server command's settings: options over environment variables, and no open port without auth."""

from __future__ import annotations

import pytest

from adapters.web.auth import is_loopback
from adapters.web.settings import SettingsError, parse_settings

TOKEN = "tok-9f8e7d6c5b4a"


def test_binding_beyond_loopback_without_auth_refuses_to_start_unless_told() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")
    with pytest.raises(SettingsError, match="without authentication"):
        parse_settings(["--host", "0.0.0.0"], {}).check({})
    parse_settings(["--host", "0.0.0.0"], {}).check({"BIDI_WEB_TOKEN": TOKEN})
    parse_settings(["--host", "0.0.0.0", "--allow-unauthenticated"], {}).check({})
    parse_settings([], {"BIDI_WEB_HOST": "0.0.0.0", "BIDI_WEB_ALLOW_UNAUTHENTICATED": "1"}).check({})
    parse_settings(["--host", "0.0.0.0", "--auth", "pkg:hook"], {}).check({})
    from adapters.web.__main__ import main

    assert main(["--host", "0.0.0.0"]) == 2


def test_options_win_over_environment_variables() -> None:
    settings = parse_settings(["--workers", "3"], {"BIDI_WEB_WORKERS": "2", "BIDI_WEB_MAX_CONVERSATIONS": "7"})
    assert settings.workers == 3
    assert settings.limits.max_conversations == 7
    with pytest.raises(SettingsError, match="BIDI_WEB_PORT"):
        parse_settings([], {"BIDI_WEB_PORT": "eighty"})


def test_phone_calls_need_the_twilio_auth_token() -> None:
    settings = parse_settings(["--twilio-public-url", "https://phone.example.com"], {})
    assert settings.twilio_public_url == "https://phone.example.com"
    with pytest.raises(SettingsError, match="TWILIO_AUTH_TOKEN"):
        settings.check({})
    settings.check({"TWILIO_AUTH_TOKEN": "x" * 32})
    from_env = parse_settings([], {"BIDI_WEB_TWILIO_PUBLIC_URL": "https://p.example"})
    assert from_env.twilio_public_url == "https://p.example"
