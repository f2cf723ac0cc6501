"""The OSC service behind ``ddsp-pd serve`` (namespace: docs/osc.md).

Modules: ``state`` (settings, validation, OSC conversions), ``osc`` (datagrams -> handlers),
``handlers`` (what each request does), ``worker`` (the background render thread),
``replies`` (paced OSC replies), ``clients`` (who hears what, error limits), ``access``
(allowed senders, path roots), ``pacing`` (token buckets, drop counts), ``outputs`` (the output
folder), ``engine`` (what the server needs of :class:`ddsp_pd.transfer.Engine`), ``app``
(start, stop, signals, logging).
"""

from ddsp_pd.server.app import OscService, ServerConfig, serve_until_signal

__all__ = ["OscService", "ServerConfig", "serve_until_signal"]
