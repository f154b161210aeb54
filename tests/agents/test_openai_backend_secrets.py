"""Agent arguments written to run files never carry keys: redact_secrets."""

from __future__ import annotations

from hiergym.agents.spec import REDACTED, redact_secrets


def test_secret_arguments_are_redacted():
    args = {
        "api_key": "sk-live-123", "API_KEY": "sk-2", "hf_token": "hf_x", "AuthToken": "t", "client_secret": "s",
        "password": "p", "db_Password": "p2", "apikey": "k",
        "api_key_env": "MY_KEY_VAR",  # names the variable, not the key
        "max_new_tokens": 64, "planner_max_new_tokens": 96, "max_prompt_tokens": 900,  # counts, not secrets
        "temperature": 0.0, "mode": "hierarchical", "executor": "openai:m@http://h/v1",
        "extra_body": {"top_k": 20, "session_token": "abc"},
    }
    redacted = redact_secrets(args)
    secret = {"api_key", "API_KEY", "hf_token", "AuthToken", "client_secret", "password", "db_Password", "apikey"}
    assert {k for k, v in redacted.items() if v == REDACTED} == secret
    assert redacted["api_key_env"] == "MY_KEY_VAR" and redacted["max_new_tokens"] == 64
    assert redacted["extra_body"] == {"top_k": 20, "session_token": REDACTED}
    assert args["api_key"] == "sk-live-123" and args["extra_body"]["session_token"] == "abc"  # a copy
    assert "sk-live-123" not in repr(redacted) and redact_secrets({}) == {}
