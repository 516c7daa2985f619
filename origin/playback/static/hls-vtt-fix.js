// hls.js 1.7.4 (the lock's) loses every WebVTT cue of a discontinuity whose video has
// not been parsed yet when the initial PTS of an earlier discontinuity arrives:
// TimelineController.onInitPtsFound fails each deferred subtitle fragment whose own
// discontinuity has no initPTS yet ("Subtitle discontinuity domain does not match
// main") instead of deferring it again. The subtitles stream loads ahead of the
// video, so on a stitched scene this drops whole clips' captions now and then (issue
// 27; measured in tests/integration/test_captions_browser.py). This subclass keeps
// such a fragment deferred until its own discontinuity's initPTS is found; nothing
// else changes. Passed as `timelineController` in the player's hls.js config; drop it
// once hls.js ships the same change (the upstream report is in docs/NOTES.md).
"use strict";
(function () {
  const Base = window.Hls && Hls.DefaultConfig && Hls.DefaultConfig.timelineController;
  if (!Base) return;
  class TimelineController extends Base {
    onInitPtsFound(_event, data) {
      if (data.id === "main") this.initPTS = data.timestampOffsets;
      const waiting = this.unparsedFrags;
      if (!waiting.length) return;
      this.unparsedFrags = [];
      for (const loaded of waiting) {
        if (this.initPTS[loaded.frag.cc]) this.onFragLoaded(Hls.Events.FRAG_LOADED, loaded);
        else this.unparsedFrags.push(loaded);  // its own discontinuity's initPTS is still to come
      }
    }
  }
  window.StoryForgeHlsFix = { timelineController: TimelineController };
})();
