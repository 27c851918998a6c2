"""Choosing a device by index or name, and a format it accepts."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from adapters.audio._errors import NO_DEVICE_HINT, AudioDeviceError, AudioUnavailableError
from ports.audio import AudioDevice, AudioDeviceInfo, AudioFormat, StreamConfig, StreamKind

__all__ = ["DeviceSpec", "format_devices", "negotiate", "select_device"]

logger = logging.getLogger("bidi_core.adapters.audio")

DeviceSpec = int | str | None
"""A device: its index, (part of) its name, or None for the system default."""

# Rates tried, in order, after the model's own and the device's default.
_FALLBACK_RATES = (48000, 44100, 32000, 24000, 22050, 16000, 96000, 8000)


def format_devices(devices: Sequence[AudioDeviceInfo]) -> str:
    """A table of input and output devices: index, name, channels, default rate, host API."""
    lines: list[str] = []
    sections: tuple[tuple[StreamKind, str], ...] = (("input", "Input devices"), ("output", "Output devices"))
    for kind, title in sections:
        rows = [d for d in devices if d.max_channels(kind) > 0]
        lines.append(f"{title}:")
        if not rows:
            lines.append("  (none)")
            continue
        width = max(len("name"), *(len(d.name) for d in rows))
        lines.append(f"    {'index':>5}  {'name':<{width}}  {'channels':>8}  {'default rate':>12}  host API")
        for d in rows:
            default = d.default_input if kind == "input" else d.default_output
            mark = "*" if default else " "
            rate = f"{d.default_sample_rate:.0f} Hz"
            channels = d.max_channels(kind)
            lines.append(f"  {mark} {d.index:>5}  {d.name:<{width}}  {channels:>8}  {rate:>12}  {d.host_api}")
    lines.append("* = the system's default device")
    return "\n".join(lines)


def _listing(devices: Sequence[AudioDeviceInfo], kind: StreamKind) -> str:
    usable = [d for d in devices if d.max_channels(kind) > 0]
    if not usable:
        return f"there are no {kind} devices"
    names = ", ".join(f"{d.index}: {d.name!r}" for d in usable)
    return f"{kind} devices: {names} (python -m adapters.audio lists them)"


def select_device(
    devices: Sequence[AudioDeviceInfo], default: int | None, kind: StreamKind, spec: DeviceSpec
) -> AudioDeviceInfo:
    """The device ``spec`` names, for a stream of ``kind``.

    An int is an index. A string matches a name: exactly (ignoring case)
    first, then as a part of one name; a string that matches several names
    is an error that lists them, so "USB" never silently picks the wrong
    headset. A string of digits that matches no name is taken as an index.
    """
    usable = [d for d in devices if d.max_channels(kind) > 0]
    if not usable:
        raise AudioUnavailableError(
            f"no audio {kind} device found ({len(devices)} device(s), none with {kind} channels): {NO_DEVICE_HINT}"
        )
    if isinstance(spec, bool) or not isinstance(spec, int | str | None):
        raise AudioDeviceError(f"{kind} device must be an index (int), a name (str) or None, not {spec!r}")
    if spec is None:
        chosen = next((d for d in usable if d.index == default), None)
        if chosen is None:
            chosen = usable[0]
            logger.debug("no default %s device; using %d: %r", kind, chosen.index, chosen.name)
        return chosen
    if isinstance(spec, str):
        wanted = spec.strip().casefold()
        exact = [d for d in usable if d.name.casefold() == wanted]
        if len(exact) == 1:
            return exact[0]
        matches = exact or [d for d in usable if wanted in d.name.casefold()]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            names = ", ".join(f"{d.index}: {d.name!r}" for d in matches)
            raise AudioDeviceError(f"{kind} device {spec!r} is ambiguous: it matches {names}; use an index")
        if not wanted.isdigit():
            raise AudioDeviceError(f"no {kind} device is called {spec!r}; {_listing(devices, kind)}")
        spec = int(wanted)
    device = next((d for d in devices if d.index == spec), None)
    if device is None:
        raise AudioDeviceError(f"no audio device has index {spec}; {_listing(devices, kind)}")
    if device.max_channels(kind) == 0:
        raise AudioDeviceError(f"device {spec} ({device.name!r}) cannot do {kind}; {_listing(devices, kind)}")
    return device


def _unique(values: Sequence[int]) -> list[int]:
    seen: list[int] = []
    for v in values:
        if v > 0 and v not in seen:
            seen.append(v)
    return seen


def negotiate(
    backend: AudioDevice, kind: StreamKind, device: AudioDeviceInfo, wanted: AudioFormat, frames_per_buffer: int
) -> StreamConfig:
    """The stream to open on ``device`` for audio in the ``wanted`` format.

    The wanted format itself if the device takes it; else the same rate with
    another channel count (mixing is lossless enough), else the device's
    default rate, then common rates. Blocks keep the duration that
    ``frames_per_buffer`` frames have at the wanted rate. Calls the backend:
    run it in a worker thread.
    """
    max_channels = device.max_channels(kind)
    channels = _unique([wanted.channels, 1, 2])
    channels = [c for c in channels if c <= max_channels] or [max_channels]
    rates = _unique([wanted.sample_rate, round(device.default_sample_rate), *_FALLBACK_RATES])
    for rate in rates:
        frames = max(1, round(frames_per_buffer * rate / wanted.sample_rate))
        for count in channels:
            config = StreamConfig(kind, device.index, rate, count, frames)
            if backend.is_supported(config):
                if rate != wanted.sample_rate or count != wanted.channels:
                    logger.debug(
                        "%s device %r refuses %d Hz x %d; opening it at %d Hz x %d and converting (soxr)",
                        kind,
                        device.name,
                        wanted.sample_rate,
                        wanted.channels,
                        rate,
                        count,
                    )
                return config
    tried = ", ".join(str(r) for r in rates)
    raise AudioDeviceError(
        f"{kind} device {device.index} ({device.name!r}) accepts none of these formats: "
        f"{tried} Hz with {' or '.join(map(str, channels))} channel(s) of 16-bit PCM"
    )
