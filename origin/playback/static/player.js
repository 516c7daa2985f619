// StoryForge scene player: plays the stitched scene with hls.js, names the
// contributor of the clip on screen, offers a quality selector and storyboard
// previews while scrubbing, loads the scene's chapters (one per clip) as a
// <track kind="chapters">, marking each clip's start and name on the timeline, and
// offers the scene's subtitles behind a captions button (off by default; the choice
// is kept in localStorage for the next page).
// State is exposed on window.sf for tests.
"use strict";
(function () {
  const cfg = JSON.parse(document.getElementById("cfg").textContent);
  const video = document.getElementById("video");
  const who = document.getElementById("who");
  const quality = document.getElementById("quality");
  const scrub = document.getElementById("scrub");
  const preview = document.getElementById("preview");
  const errorBox = document.getElementById("error");
  const chapterBar = document.getElementById("chapters");
  const sf = (window.sf = { events: [], fatal: null, ccSeen: [], scene: null, cues: [], chapters: [] });
  document.getElementById("title").textContent = cfg.title;

  function log(kind, data) { sf.events.push(Object.assign({ kind: kind, t: video.currentTime }, data)); }

  function clipAt(time) {
    if (!sf.scene) return null;
    const segs = sf.scene.segments;
    for (let i = segs.length - 1; i >= 0; i--) if (time >= segs[i].startTime) return segs[i];
    return segs[0] || null;
  }

  function showContributor(seg) { if (seg) who.textContent = seg.contributor.username; }

  fetch(cfg.playlistUrl).then((r) => r.json()).then((scene) => {
    sf.scene = scene;
    showContributor(scene.segments[0]);
  });

  fetch(cfg.storyboardUrl).then((r) => (r.ok ? r.text() : "")).then((text) => {
    const base = new URL(cfg.storyboardUrl, location.href);
    const re = /(\d+):(\d+):(\d+\.\d+) --> (\d+):(\d+):(\d+\.\d+)\s*\n(\S+)#xywh=(\d+),(\d+),(\d+),(\d+)/g;
    const secs = (h, m, s) => (+h) * 3600 + (+m) * 60 + parseFloat(s);
    let m;
    while ((m = re.exec(text))) {
      sf.cues.push({
        start: secs(m[1], m[2], m[3]), end: secs(m[4], m[5], m[6]),
        url: new URL(m[7], base).href, x: +m[8], y: +m[9], w: +m[10], h: +m[11],
      });
    }
  });

  // Chapters: the browser parses the WebVTT; "hidden" loads the cues without showing them.
  const track = document.createElement("track");
  track.kind = "chapters";
  track.label = "Clips";
  track.srclang = "en";
  track.src = cfg.chaptersUrl;
  track.default = true;
  video.crossOrigin = "anonymous";  // the chapters may come from the CDN's origin
  video.appendChild(track);
  track.track.mode = "hidden";
  track.addEventListener("load", () => {
    const cues = Array.from(track.track.cues || []);
    const total = cues.length ? cues[cues.length - 1].endTime : 0;
    // getCueAsHTML() decodes the cue text's character references (&amp; etc.)
    sf.chapters = cues.map((c) => ({
      start: c.startTime, end: c.endTime, text: c.getCueAsHTML().textContent,
    }));
    for (const c of sf.chapters) {
      const left = total ? (100 * c.start / total) + "%" : "0";
      const mark = document.createElement("div");
      mark.className = "mark";
      mark.style.left = left;
      scrub.appendChild(mark);
      const label = document.createElement("div");
      label.className = "chapter";
      label.style.left = left;
      label.style.width = total ? (100 * (c.end - c.start) / total) + "%" : "auto";
      label.textContent = c.text;
      label.title = c.text;
      label.addEventListener("click", () => { video.currentTime = c.start; });
      chapterBar.appendChild(label);
    }
  });
  track.addEventListener("error", () => log("chapters", { error: true }));

  function timeAtPointer(ev) {
    const rect = scrub.getBoundingClientRect();
    const frac = Math.min(1, Math.max(0, (ev.clientX - rect.left) / rect.width));
    return frac * (video.duration || (sf.scene ? sf.scene.totalDuration : 0));
  }
  scrub.addEventListener("mousemove", (ev) => {
    const t = timeAtPointer(ev);
    const cue = sf.cues.find((c) => t >= c.start && t < c.end);
    if (!cue) { preview.style.display = "none"; return; }
    Object.assign(preview.style, {
      display: "block", width: cue.w + "px", height: cue.h + "px",
      backgroundImage: "url(" + cue.url + ")", backgroundPosition: -cue.x + "px " + -cue.y + "px",
      left: Math.max(0, ev.clientX - scrub.getBoundingClientRect().left - cue.w / 2) + "px",
    });
  });
  scrub.addEventListener("mouseleave", () => { preview.style.display = "none"; });
  scrub.addEventListener("click", (ev) => { video.currentTime = timeAtPointer(ev); });
  video.addEventListener("timeupdate", () => {
    const d = video.duration || 1;
    scrub.querySelector(".pos").style.width = (100 * video.currentTime / d) + "%";
    showContributor(clipAt(video.currentTime));
  });
  video.addEventListener("ended", () => log("ended", {}));

  if (!window.Hls || !Hls.isSupported()) {
    errorBox.textContent = "This browser cannot play HLS through Media Source Extensions.";
    return;
  }
  // hls-vtt-fix.js: no captions lost at discontinuities (hls.js 1.7.4)
  const hls = new Hls(Object.assign({ enableWorker: true }, window.StoryForgeHlsFix || {}));
  sf.hls = hls;
  hls.on(Hls.Events.MANIFEST_PARSED, (_e, data) => {
    data.levels.forEach((lvl, i) => {
      const opt = document.createElement("option");
      opt.value = String(i);
      opt.textContent = lvl.height + "p";
      quality.appendChild(opt);
    });
    log("manifest", { levels: data.levels.length });
  });
  hls.on(Hls.Events.FRAG_CHANGED, (_e, data) => {
    const f = data.frag;
    if (sf.ccSeen.indexOf(f.cc) < 0) sf.ccSeen.push(f.cc);
    log("frag", { sn: f.sn, cc: f.cc, level: f.level });
    if (sf.scene && sf.scene.segments[f.cc]) showContributor(sf.scene.segments[f.cc]);
  });
  hls.on(Hls.Events.LEVEL_SWITCHED, (_e, data) => log("level", { level: data.level }));
  hls.on(Hls.Events.ERROR, (_e, data) => {
    log("error", { type: data.type, details: data.details, fatal: !!data.fatal });
    if (data.fatal) { sf.fatal = data.details; errorBox.textContent = "Playback error: " + data.details; }
  });
  quality.addEventListener("change", () => { hls.currentLevel = parseInt(quality.value, 10); });

  // Captions: off unless the viewer turned them on (here or on an earlier page).
  const captions = document.getElementById("captions");
  const CAPTIONS_KEY = "storyforge.captions";
  function storedLanguage() {
    try { return localStorage.getItem(CAPTIONS_KEY) || ""; } catch (_e) { return ""; }
  }
  function storeLanguage(lang) {
    try {
      if (lang) localStorage.setItem(CAPTIONS_KEY, lang); else localStorage.removeItem(CAPTIONS_KEY);
    } catch (_e) { /* storage refused: the choice lasts for this page */ }
  }
  function showCaptions(lang) {
    const index = lang ? hls.subtitleTracks.findIndex((t) => t.lang === lang) : -1;
    hls.subtitleDisplay = index >= 0;
    hls.subtitleTrack = index;
    sf.captions = index >= 0 ? lang : "";
    captions.setAttribute("aria-pressed", String(index >= 0));
    captions.textContent = index >= 0 ? "CC: " + lang : "CC: off";
  }
  hls.on(Hls.Events.SUBTITLE_TRACKS_UPDATED, (_e, data) => {
    captions.hidden = !data.subtitleTracks.length;
    const wanted = storedLanguage();
    // once hls.js has made its own choice for the new tracks (none: DEFAULT=NO)
    if (wanted) setTimeout(() => showCaptions(wanted), 0);
  });
  // each press: the next language, then off
  captions.addEventListener("click", () => {
    const langs = hls.subtitleTracks.map((t) => t.lang);
    const next = sf.captions ? langs[langs.indexOf(sf.captions) + 1] || "" : langs[0] || "";
    storeLanguage(next);
    showCaptions(next);
  });
  hls.loadSource(cfg.masterUrl);
  hls.attachMedia(video);
})();
