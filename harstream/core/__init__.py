"""The pure recognition core: samples in, decisions out.

Preprocessing, the window buffer, the inference backends, smoothers, the per-device
engine, the model bundle and the payload codec. No sockets, no clock, no asyncio, no
configuration (plain values come in from ``harstream.runtime``); torch and onnxruntime
are imported only by the backend that needs them.
"""
