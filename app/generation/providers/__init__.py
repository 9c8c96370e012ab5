"""Where generations come from: Claude (`anthropic`) or, without an API key, `offline`."""

import logging
from typing import Any

from app.config import Settings
from app.generation.providers.base import Provider

logger = logging.getLogger(__name__)


def create_provider(settings: Settings, observer: Any = None) -> Provider:
    """The provider for this process, created once per app lifetime; `observer` (the
    adaptive limiter) hears the rate-limit headers of every answer."""
    if settings.anthropic_api_key is None or not settings.anthropic_api_key.get_secret_value():
        from app.generation.providers.offline import OfflineProvider

        logger.warning(
            "ANTHROPIC_API_KEY is not set: generations use the offline extractive generator "
            "(%s), not Claude",
            OfflineProvider.model,
        )
        return OfflineProvider()
    from app.generation.providers.anthropic import AnthropicProvider

    return AnthropicProvider(settings, observer)
