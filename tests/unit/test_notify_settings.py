"""NOTIFY_* settings (rollout.settings.load_notify_settings): channels from their URLs, every bad value named
at once, and never a URL or key in an error or a repr."""

from __future__ import annotations

import pytest

from rollout.settings import DEFAULT_NOTIFY_QUEUE, SettingsError, load_notify_settings

QUEUE = {"TickQueue": "UseDevelopmentStorage=true"}
SECRET = "https://example.webhook.office.com/webhookb2/SECRET-PART"


def test_nothing_configured_means_notifications_off() -> None:
    notify = load_notify_settings(QUEUE)
    assert not notify.enabled and notify.channels == {} and notify.queue_name == DEFAULT_NOTIFY_QUEUE


def test_each_url_is_a_channel_and_repr_hides_them() -> None:
    notify = load_notify_settings(
        {
            **QUEUE,
            "NOTIFY_TEAMS_WEBHOOK_URL": SECRET,
            "NOTIFY_WEBHOOK_URL": "http://127.0.0.1:8080/hook",  # http only to a loopback address
            "NOTIFY_EVENTGRID_ENDPOINT": "https://topic.westeurope-1.eventgrid.azure.net/api/events",
            "NOTIFY_EVENTGRID_KEY": "KEY-VALUE",
            "NOTIFY_MAX_ATTEMPTS": "4",
        }
    )
    assert notify.enabled and set(notify.channels) == {"teams", "webhook", "eventgrid"}
    assert notify.max_attempts == 4 and notify.eventgrid_key == "KEY-VALUE"
    assert "SECRET-PART" not in repr(notify) and "KEY-VALUE" not in repr(notify)


def test_bad_values_are_all_named_without_echoing_a_url() -> None:
    with pytest.raises(SettingsError) as raised:
        load_notify_settings(
            {
                "NOTIFY_SLACK_WEBHOOK_URL": "http://hooks.slack.example/services/SECRET-PART",
                "NOTIFY_TEAMS_WEBHOOK_URL": SECRET,
                "NOTIFY_QUEUE": "Bad_Queue",
                "NOTIFY_MAX_ATTEMPTS": "0",
                "NOTIFY_RETRY_BASE_SECONDS": "soon",
                "NOTIFY_TIMEOUT_SECONDS": "120",
            }
        )
    text = str(raised.value)
    for name in (
        "NOTIFY_SLACK_WEBHOOK_URL must be an https:// URL",
        "no queue connection",
        "NOTIFY_QUEUE=",
        "NOTIFY_MAX_ATTEMPTS=",
        "NOTIFY_RETRY_BASE_SECONDS=",
        "NOTIFY_TIMEOUT_SECONDS=",
    ):
        assert name in text
    assert "SECRET-PART" not in text
