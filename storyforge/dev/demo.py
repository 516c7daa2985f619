"""The demo scene of `storyforge dev`: three clips by three contributors, generated
with ffmpeg's lavfi sources and sent through the real upload API on first start."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import aiohttp

# (title card colour, size, frame rate, audio): a 16:9 clip with a tone, a portrait
# phone-style clip, and a clip without an audio track.
DEMO_CLIPS = (
    ("spacewriter", "1280x720", 30, 440),
    ("cosmicwriter", "720x1280", 30, 660),
    ("nebulawriter", "960x540", 25, None),
)


def demo_clip_command(
    out: Path, size: str, fps: int, tone: int | None, seconds: float
) -> list[str]:
    cmd = [
        "ffmpeg",
        "-nostdin",
        "-v",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size={size}:rate={fps}:duration={seconds}",
    ]
    if tone is not None:
        cmd += ["-f", "lavfi", "-i", f"sine=frequency={tone}:sample_rate=48000:duration={seconds}"]
    cmd += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    if tone is not None:
        cmd += ["-c:a", "aac", "-shortest"]
    return [*cmd, str(out)]


async def ensure_demo_scene(base_url: str, token: str, home: Path, seconds: float = 8.0) -> str:
    """Create the demo scene once (its id is kept in HOME/demo-scene); return its id."""
    marker = home / "demo-scene"
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(base_url, headers=headers) as http:
        if marker.exists():
            scene_id = marker.read_text().strip()
            async with http.get(f"/api/v1/scenes/{scene_id}/playlist") as r:
                if r.status == 200:
                    return scene_id
        workdir = home / "demo"
        workdir.mkdir(parents=True, exist_ok=True)
        async with http.post("/api/v1/scenes", json={"title": "Demo: The Signal"}) as r:
            r.raise_for_status()
            scene_id = (await r.json())["id"]
        for sequence, (name, size, fps, tone) in enumerate(DEMO_CLIPS, start=1):
            username = f"{name}-{secrets.token_hex(2)}"
            async with http.post("/api/v1/users", json={"username": username}) as r:
                r.raise_for_status()
                user_id = (await r.json())["id"]
            clip = workdir / f"clip{sequence}.mp4"
            proc = await asyncio.create_subprocess_exec(
                *demo_clip_command(clip, size, fps, tone, seconds)
            )
            if await proc.wait() != 0:
                raise RuntimeError(f"ffmpeg could not generate demo clip {sequence}")
            with clip.open("rb") as body:
                async with http.post(
                    f"/api/v1/scenes/{scene_id}/segments",
                    params={"contributor": user_id, "sequence": str(sequence)},
                    data=body,
                    headers={"Content-Type": "video/mp4"},
                ) as r:
                    r.raise_for_status()
        marker.write_text(scene_id)
        return scene_id
