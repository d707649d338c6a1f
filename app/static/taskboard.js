// Report failed htmx requests in #live-status, and clear the report once a
// request succeeds again. Everything else on the pages works without this file.
(function () {
  "use strict";

  function report(text) {
    var element = document.getElementById("live-status");
    if (!element) {
      return;
    }
    element.textContent = text;
    element.hidden = !text;
  }

  document.addEventListener("htmx:sendError", function () {
    report("The server did not respond; live updates resume when it does.");
  });

  document.addEventListener("htmx:responseError", function (event) {
    var xhr = event.detail.xhr;
    report("A request failed with status " + xhr.status + ". Reload the page if this persists.");
  });

  document.addEventListener("htmx:afterRequest", function (event) {
    if (event.detail.successful) {
      report("");
    }
  });
})();
