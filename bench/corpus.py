"""The per-title corpus (issue 26): five 1080p30 sources of different difficulty, made
with ffmpeg's lavfi sources and encoded once like a phone's upload (H.264 at 8 Mbit/s,
AAC 192k 48 kHz stereo; a beeping tone), kept in bench/out/clips:

- ``slides``: static slides (text and a bar chart on a flat background, a new slide
  every 4 s; `drawtext` needs a font: fonts-dejavu-core);
- ``flat_animation``: a cartoon's flat colours and outlined shapes in motion, drawn on
  twos;
- ``cellular``: a cellular pattern with sharp edges, changing every frame (`life`, its
  cells scaled up without smoothing);
- ``noisy_shake``: a detailed picture (`mandelbrot`) under a shaking camera with
  sensor noise;
- ``talking_head``: a still, lightly noisy background and one moving, detailed region.

Not a benchmark itself: `bench/pertitle.py` encodes the corpus.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import benchutil

SIZE = "1920x1080"
FPS = 30
TONE = "sine=frequency=440:beep_factor=4:sample_rate=48000"
_TEXT = "drawtext=fontsize=54:fontcolor=0x202020:x=140"


def _slide(expr: str) -> str:
    """drawtext: `expr` of the slide number (a new slide every 4 s), as an integer."""
    return r"%{eif\:trunc(t/4)" + expr + r"\:d}"


#: name -> (lavfi inputs, filter graph joining them into [v] or None for one input)
CORPUS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "slides": (
        (
            f"color=c=0xf4f2ec:s={SIZE}:r={FPS},"
            "drawbox=x=0:y=0:w=iw:h=150:color=0x1f3a5f:t=fill,"
            f"drawtext=text='Slide {_slide('+1')} - Encoding economics':fontsize=72:"
            "fontcolor=white:x=80:y=40,"
            f"{_TEXT}:y=260:text='- per-title rate control ({_slide('*7+3')} clips)',"
            f"{_TEXT}:y=350:text='- capped CRF on every rung, {_slide('*13+21')} kbit/s',"
            f"{_TEXT}:y=440:text='- bandwidth measured from what was written',"
            f"{_TEXT}:y=530:text='- rungs that add nothing are not made',"
            "drawbox=x=1300:y=640:w=120:h=300:color=0xc0392b:t=fill,"
            "drawbox=x=1460:y=740:w=120:h=200:color=0x2980b9:t=fill,"
            "drawbox=x=1620:y=540:w=120:h=400:color=0x27ae60:t=fill",
        ),
        None,
    ),
    "flat_animation": (
        (
            f"gradients=s={SIZE}:r={FPS}:speed=0.00001:c0=0x5dade2:c1=0xd6eaf8:"
            "x0=960:y0=0:x1=960:y1=780,format=yuv420p,"
            "drawbox=x=0:y=780:w=iw:h=300:color=0x3c9d4e:t=fill,"
            "drawbox=x=0:y=780:w=iw:h=8:color=0x1e5631:t=fill,"
            "drawbox=x=1560:y=90:w=180:h=180:color=0xf9d71c:t=fill,"
            "drawtext=text='Episode 26':fontsize=64:fontcolor=0x1b2631:x=80:y=60",
            f"color=c=0xe74c3c:s=320x160:r={FPS},"
            "drawbox=x=0:y=0:w=iw:h=ih:color=0x17202a:t=8,"
            "drawbox=x=40:y=30:w=90:h=60:color=0xaed6f1:t=fill",
            f"color=c=0x8e44ad:s=160x160:r={FPS},"
            "drawbox=x=0:y=0:w=iw:h=ih:color=0x17202a:t=8,"
            "drawbox=x=40:y=40:w=24:h=24:color=white:t=fill,"
            "drawbox=x=96:y=40:w=24:h=24:color=white:t=fill",
            f"color=c=0xfdfefe:s=420x110:r={FPS},drawbox=x=0:y=0:w=iw:h=ih:color=0xaab7b8:t=6",
        ),
        # sprites in motion, drawn on twos (a new picture every other frame)
        "[0][1]overlay=x='mod(t*240\\,2240)-320':y=640[a];"
        "[a][2]overlay=x='880+300*sin(t*1.3)':y='560-abs(320*sin(t*2.6))'[b];"
        "[b][3]overlay=x='mod(t*60\\,2340)-420':y=150,fps=15,fps=30[v]",
    ),
    "cellular": (
        (
            f"life=s=480x270:mold=10:r={FPS}:ratio=0.5:death_color=#202040:"
            "life_color=#f0c040,scale=1920:1080:flags=neighbor",
        ),
        None,
    ),
    "noisy_shake": (
        (
            f"mandelbrot=s=2112x1188:r={FPS},"
            "crop=1920:1080:x='96+60*sin(t*7)+30*sin(t*13)':y='54+40*sin(t*5)+20*sin(t*11)',"
            "noise=alls=16:allf=t+u",
        ),
        None,
    ),
    "talking_head": (
        (
            f"gradients=s={SIZE}:r={FPS}:speed=0.00001:c0=0x3a4a5a:c1=0x8a9aaa:"
            "x0=0:y0=0:x1=1920:y1=1080,format=yuv420p,noise=alls=4:allf=t",
            f"mandelbrot=s=560x700:r={FPS}:start_scale=2:end_scale=1.9",
        ),
        "[1:v]format=yuv420p[h];[0:v][h]overlay=x='680+18*sin(t*1.7)':y='230+10*sin(t*2.3)',"
        "drawbox=x=860:y=760:w=200:h=40:color=0x401010:t=fill[v]",
    ),
}


def make(name: str, seconds: int, *, size: str | None = None) -> Path:
    """The corpus source `name`, `seconds` long, made once (1080p30, or scaled to `size`,
    e.g. ``640x480``: a source smaller than a rung)."""
    clips = benchutil.OUT / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    tag = f"_{size}" if size else ""
    path = clips / f"corpus_{name}{tag}_{seconds}s.mp4"
    if path.exists():
        return path
    inputs, graph = CORPUS[name]
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
    for source in inputs:
        cmd += ["-f", "lavfi", "-i", source]
    cmd += ["-f", "lavfi", "-i", TONE]
    scale = f"scale={size.replace('x', ':')}:flags=bicubic,setsar=1" if size else ""
    if graph is None:
        video = f"[0:v]{scale or 'null'}[v]"
    else:
        video = graph[: -len("[v]")] + (f",{scale}" if scale else "") + "[v]"
    cmd += ["-filter_complex", video, "-map", "[v]", "-map", f"{len(inputs)}:a"]
    cmd += ["-t", str(seconds)]
    cmd += ["-c:v", "libx264", "-preset", "veryfast", "-profile:v", "high"]
    cmd += ["-pix_fmt", "yuv420p", "-b:v", "8M", "-maxrate", "12M", "-bufsize", "16M"]
    cmd += ["-g", str(FPS * 2), "-c:a", "aac", "-b:a", "192k", "-ac", "2"]
    cmd += ["-movflags", "+faststart"]
    tmp = path.with_suffix(".part.mp4")
    print(f"generating {path.name} ...", flush=True)
    subprocess.run([*cmd, str(tmp)], check=True, stdin=subprocess.DEVNULL)
    tmp.rename(path)
    return path
