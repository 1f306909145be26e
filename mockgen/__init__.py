"""mockgen: an offline emulator of the image/video generation "Open API"."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .clock import Clock, ManualClock, SystemClock

__version__ = "0.1.0"
__all__ = ["Clock", "ManualClock", "SystemClock", "__version__", "create_app"]

if TYPE_CHECKING:
    from .app import create_app


def __getattr__(name: str) -> Any:
    # Lazy, so `mockgen validate` and `import mockgen.scenario` do not pay for Starlette.
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module 'mockgen' has no attribute {name!r}")
