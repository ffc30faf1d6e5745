"""toolrl-serving: an OpenAI-compatible HTTP server for toolrl-trained models.

    from toolrl_serving import ServerSettings, create_app
    app = create_app(ServerSettings(model="smollm2-135m-instruct"))

or from the shell: `toolrl serve CKPT_OR_NAME`.
"""

__version__ = "0.1.0"

from toolrl_serving.settings import Limits, ServerSettings  # noqa: E402


def create_app(settings: ServerSettings, **kwargs):  # type: ignore[no-untyped-def]
    """See `toolrl_serving.app.create_app` (imported lazily: importing this package stays light)."""
    from toolrl_serving.app import create_app as _create

    return _create(settings, **kwargs)


__all__ = ["Limits", "ServerSettings", "create_app", "__version__"]
