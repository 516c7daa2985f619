// Uploads one file with the real tus-js-client (npm) in Node, for the tests: every
// request and answer is printed as a JSON line, so the test sees what the client did.
//   node tus_upload.cjs '{"endpoint", "file", "token", "metadata", "chunkSize",
//                         "urlStorage", "stopAfter"?, "retryDelays"?}'
// With `stopAfter` the process exits (cutting its connection mid-request) once that
// many bytes were sent. A second run with the same `urlStorage` resumes the upload
// through findPreviousUploads. Exit status: 0 uploaded, 1 failed, 3 stopped.
"use strict";
const fs = require("fs");
const tus = require("tus-js-client");

const opts = JSON.parse(process.argv[2]);
const say = (event) => process.stdout.write(JSON.stringify(event) + "\n");
const file = fs.createReadStream(opts.file);
const size = fs.statSync(opts.file).size;

const upload = new tus.Upload(file, {
  endpoint: opts.endpoint,
  chunkSize: opts.chunkSize,
  uploadSize: size,
  metadata: opts.metadata,
  headers: { Authorization: `Bearer ${opts.token}` },
  urlStorage: new tus.FileUrlStorage(opts.urlStorage),
  storeFingerprintForResuming: true,
  removeFingerprintOnSuccess: false,
  retryDelays: opts.retryDelays === undefined ? null : opts.retryDelays,
  onBeforeRequest(req) {
    say({
      event: "request",
      method: req.getMethod(),
      url: req.getURL(),
      offset: req.getHeader("Upload-Offset") ?? null,
    });
  },
  onAfterResponse(req, res) {
    say({
      event: "response",
      method: req.getMethod(),
      status: res.getStatus(),
      offset: res.getHeader("Upload-Offset") ?? null,
      location: res.getHeader("Location") ?? null,
    });
  },
  onProgress(sent, total) {
    say({ event: "progress", sent, total });
    if (opts.stopAfter !== undefined && sent >= opts.stopAfter) {
      say({ event: "stopped", sent });
      process.exit(3);
    }
  },
  onError(error) {
    say({ event: "error", message: String(error) });
    process.exit(1);
  },
  onSuccess() {
    say({ event: "success", url: upload.url });
    process.exit(0);
  },
});

upload.findPreviousUploads().then((previous) => {
  say({ event: "previous", urls: previous.map((p) => p.uploadUrl) });
  if (previous.length > 0) {
    upload.resumeFromPreviousUpload(previous[0]);
  }
  upload.start();
});
