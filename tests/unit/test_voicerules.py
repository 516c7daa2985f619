"""origin.assets.voice: the voice anchor's sniffing, ffprobe/ffmpeg argument lists (the
same input whitelists as clips, core/ffargs.py), probe validation and failure
reasons."""

from __future__ import annotations

import pytest

from origin.assets import voice as voicerules
from origin.assets.rules import AssetLimits, Refused
from tests.helpers import images

LIMITS = AssetLimits(voice_max_seconds=60.0, voice_min_seconds=0.5)


def _probe(codec="pcm_s16le", rate="44100", channels=6, duration="2.000000", fmt="wav", extra=()):
    return {
        "streams": [
            {
                "index": 0,
                "codec_type": "audio",
                "codec_name": codec,
                "sample_rate": rate,
                "channels": channels,
                "duration": duration,
            },
            *extra,
        ],
        "format": {"format_name": fmt, "duration": duration},
    }


def _refused(fn, *args) -> Refused:
    with pytest.raises(Refused) as info:
        fn(*args)
    return info.value


def test_sniff():
    voicerules.sniff_wav(b"RIFF\x24\x00\x00\x00WAVEfmt ")
    voicerules.sniff_wav(b"RF64\xff\xff\xff\xffWAVEds64")
    err = _refused(voicerules.sniff_wav, images.hls_playlist_named_wav())
    assert (err.status, err.message) == (
        415,
        "this is an HLS playlist, not a WAV file: send a WAV recording (RIFF/WAVE)",
    )
    assert _refused(voicerules.sniff_wav, b"ID3\x03\x00").message.startswith("not a WAV file")
    assert "a ZIP archive" in _refused(voicerules.sniff_wav, b"PK\x03\x04").message


def test_commands_read_the_upload_like_clips(tmp_path):
    src, dst = tmp_path / "upload.wav", tmp_path / "voice_anchor.wav"
    assert voicerules.probe_command(src) == [
        "ffprobe",
        "-v",
        "error",
        "-hide_banner",
        "-protocol_whitelist",
        "file",
        "-format_whitelist",
        "wav",
        "-f",
        "wav",
        "-print_format",
        "json",
        "-show_format",
        "-show_streams",
        "-i",
        f"file:{src}",
    ]
    info = voicerules.VoiceInfo(2.0, 44_100, 6, "pcm_s16le")
    assert voicerules.remux_command(src, dst, info, LIMITS) == [
        "ffmpeg",
        "-nostdin",
        "-v",
        "error",
        "-hide_banner",
        "-protocol_whitelist",
        "file",
        "-format_whitelist",
        "wav",
        "-f",
        "wav",
        "-i",
        f"file:{src}",
        "-map",
        "0:a:0",
        "-map_metadata",
        "-1",
        "-map_chapters",
        "-1",
        "-t",
        "60",
        "-ac",
        "2",
        "-ar",
        "48000",
        "-c:a",
        "pcm_s16le",
        "-fflags",
        "+bitexact",
        "-flags:a",
        "+bitexact",
        "-f",
        "wav",
        "-y",
        f"file:{dst}",
    ]
    mono = voicerules.VoiceInfo(2.0, 22_050, 1, "adpcm_ms")
    command = voicerules.remux_command(src, dst, mono, LIMITS)
    assert command[command.index("-ac") + 1] == "1"


def test_validate_probe():
    assert voicerules.validate_probe(_probe(), LIMITS) == voicerules.VoiceInfo(
        2.0, 44_100, 6, "pcm_s16le"
    )
    cases = [
        (_probe(fmt="hls"), 415, "not a WAV file"),
        (_probe(duration="61.5"), 422, "the recording is 61.5 s long, above the limit of 60 s"),
        (_probe(duration="0.1"), 422, "the recording is 0.10 s long, below the minimum of 0.5 s"),
        (_probe(duration="N/A"), 422, "the WAV file's duration cannot be read"),
        (_probe(codec="none"), 422, "the WAV file's audio codec is unknown"),
        (_probe(channels=0), 422, "the WAV file declares 0 channels at 44100 Hz"),
        (
            _probe(extra=[{"codec_type": "video", "codec_name": "png"}]),
            422,
            "the WAV file must hold exactly one audio stream",
        ),
        ({"format": {"format_name": "wav"}}, 422, "the WAV file must hold exactly one"),
    ]
    for probe, status, message in cases:
        err = _refused(voicerules.validate_probe, probe, LIMITS)
        assert err.status == status and err.message.startswith(message), err.message


def test_check_output():
    good = _probe(rate="48000", channels=2, duration="1.995")
    assert voicerules.check_output(good, LIMITS).sample_rate == 48_000
    with pytest.raises(ValueError):
        voicerules.check_output(_probe(rate="44100", channels=2), LIMITS)
    short = _probe(rate="48000", channels=2, duration="0.01")
    assert _refused(voicerules.check_output, short, LIMITS).code == "damaged_audio"


def test_failure_reasons(tmp_path):
    path = tmp_path / "upload.wav"
    hls = f"[hls @ 0x55a897a1a280] Format not on whitelist 'wav'\nfile:{path}: Invalid argument\n"
    err = voicerules.failure(hls, path)
    assert (err.status, err.message) == (
        415,
        "this is not a WAV file (ffmpeg reads it as hls): send a WAV recording (RIFF/WAVE)",
    )
    broken = (
        f"[wav @ 0x1] invalid start code\nfile:{path}: Invalid data found when processing input\n"
    )
    err = voicerules.failure(broken, path)
    assert (err.status, err.message) == (
        422,
        "the WAV file cannot be read: Invalid data found when processing input",
    )
    assert voicerules.failure("", path).message.endswith("no reason given")
