/*
 * Taskboard's page script. Every page works without it. It keeps parts of a
 * page live, keeps the reader's place when they change, keeps relative times
 * current and reports failed live updates.
 *
 * Contract for a live region. Any element opts in with these attributes:
 *
 *   id="tasks"                     unique on the page, and the same id on the
 *                                  fragment that replaces it (outerHTML swaps)
 *   hx-get="/partials/..."         the fragment to fetch
 *   hx-trigger="{{ poll_trigger }}" that is "live-refresh". Other triggers may
 *                                  follow after a comma ("live-refresh, x from:body")
 *   hx-sync="this:drop"            a request that starts while another is in
 *                                  flight is dropped
 *
 * plus hx-target and hx-swap as usual. The page's <body> carries
 * data-refresh-interval (milliseconds). A fragment rendered without the
 * live-refresh trigger, such as a finished task, stops refreshing.
 *
 * An action that swaps a live region from inside it (hx-target="#task-live"
 * on a cancel button's form) syncs with itself only (hx-sync="this:drop"),
 * because the region's own hx-sync would drop it while a refresh is in
 * flight. While the action is in flight the region does not refresh, and a
 * refresh sent before it started is dropped instead of swapped, so stale
 * content cannot overwrite the action's result. Aborting that refresh with
 * hx-sync would also work, but htmx logs every aborted request as a console
 * error.
 *
 * Scheduling. One timer ticks once per interval. A tick sends one
 * live-refresh event to each live region that has no request in flight,
 * unless the tab is hidden or the reader paused live updates. So each region
 * makes at most one request per interval, and a slow response never has
 * requests queued behind it. A tick skipped while hidden or paused is made up
 * by one immediate tick when the tab shows again or the reader resumes.
 *
 * Keeping the reader's place. When a response replaces a live region, this
 * script first records, inside the region: the window's scroll position, the
 * scroll offsets of scrolled elements, the focused element and its text
 * selection, the <details> that the reader opened or closed (those whose
 * state differs from how the server rendered them), and, for a refresh but
 * not after an action, form controls whose value or ticked state differs
 * from the server's default. After the swap it applies each record to the
 * matching element of the new content. Elements match by id. Checkboxes and
 * radios match by name and value (name="task_id" value="42"), links by
 * href, and buttons by their form's action and their text. Other elements
 * match by their path of tag names and positions below the nearest of
 * those, so give ids to what should survive. A <details> the reader left
 * alone takes the state of the new content, so an error panel that the
 * server renders open once the error is stored does open. An element with
 * data-scroll-end (a log) starts scrolled to its end and follows new lines
 * while the reader stays there.
 *
 * The pause control is the button #live-toggle with its status text
 * #live-state. The choice is stored in localStorage, so it applies to every
 * page of the site. Pausing also stops relative times from changing.
 *
 * Relative times. Each <time data-relative datetime="..."> gets its text
 * ("12 s ago", "in 3 min") recomputed every second, in the same format as
 * relative_text() in app/web/filters.py. The server's clock is the reference:
 * the offset to this browser's clock comes from <meta name="server-time"> and
 * from the Date header of live responses.
 */
(function () {
  "use strict";

  var LIVE_EVENT = "live-refresh";
  var PAUSE_KEY = "taskboard.liveUpdates";
  // A live request still running after this many intervals (at least
  // MIN_LIVE_TIMEOUT_MS) is aborted, so that one stuck response cannot stop
  // its region from refreshing for good.
  var LIVE_TIMEOUT_INTERVALS = 5;
  var MIN_LIVE_TIMEOUT_MS = 15000;
  // The Date header counts whole seconds, so smaller differences are noise.
  var CLOCK_CORRECTION_MS = 2000;

  var intervalMs = 0;
  var timer = null;
  var missedTick = false;
  var paused = false;
  // Live regions with a refresh in flight.
  var refreshing = new WeakSet();
  // Per region id: how many actions (requests from another element that
  // target the region, such as a cancel button's POST) are in flight, and how
  // many have started in all. A refresh sent before the latest action started
  // carries stale content, so its response is dropped instead of swapped.
  var actionsInFlight = {};
  var actionCount = {};
  // Per request: the region id and action count when a refresh was sent, or
  // the region id of an action.
  var refreshRequests = new WeakMap();
  var actionRequests = new WeakMap();
  var pendingRestores = new WeakMap();
  // Per <details> element: whether the server rendered it open.
  var renderedOpen = new WeakMap();
  var serverOffsetMs = 0;

  // Failed requests

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

  document.addEventListener("htmx:timeout", function () {
    report("The server took too long to respond; live updates try again shortly.");
  });

  document.addEventListener("htmx:responseError", function (event) {
    var xhr = event.detail.xhr;
    report("A request failed with status " + xhr.status + ". Reload the page if this persists.");
  });

  // Live regions and their schedule

  function isLiveRegion(element) {
    if (!element || !element.getAttribute) {
      return false;
    }
    var trigger = element.getAttribute("hx-trigger");
    if (!trigger) {
      return false;
    }
    return trigger.split(",").some(function (part) {
      return part.trim().split(/\s+/)[0] === LIVE_EVENT;
    });
  }

  function liveRegions() {
    var found = [];
    var candidates = document.querySelectorAll("[hx-trigger]");
    for (var i = 0; i < candidates.length; i++) {
      if (isLiveRegion(candidates[i])) {
        found.push(candidates[i]);
      }
    }
    return found;
  }

  function isBusy(region) {
    return refreshing.has(region) || (actionsInFlight[region.id] || 0) > 0;
  }

  function tick() {
    if (paused || document.hidden) {
      missedTick = true;
      return;
    }
    missedTick = false;
    liveRegions().forEach(function (region) {
      if (!isBusy(region) && window.htmx) {
        window.htmx.trigger(region, LIVE_EVENT);
      }
    });
  }

  function startTimer() {
    stopTimer();
    if (intervalMs > 0) {
      timer = window.setInterval(tick, intervalMs);
    }
  }

  function stopTimer() {
    if (timer !== null) {
      window.clearInterval(timer);
      timer = null;
    }
  }

  // Make up a skipped tick at once, then count the next interval from now.
  function catchUp() {
    if (missedTick) {
      tick();
      startTimer();
    }
  }

  document.addEventListener("htmx:beforeRequest", function (event) {
    var detail = event.detail;
    var target = detail.target;
    if (isLiveRegion(detail.elt)) {
      refreshing.add(detail.elt);
      refreshRequests.set(detail.xhr, {id: detail.elt.id, actions: actionCount[detail.elt.id] || 0});
    } else if (target && target.id && isLiveRegion(target)) {
      actionsInFlight[target.id] = (actionsInFlight[target.id] || 0) + 1;
      actionCount[target.id] = (actionCount[target.id] || 0) + 1;
      actionRequests.set(detail.xhr, target.id);
    }
  });

  document.addEventListener("htmx:afterRequest", function (event) {
    var actionTarget = actionRequests.get(event.detail.xhr);
    refreshing.delete(event.detail.elt);
    if (actionTarget) {
      actionRequests.delete(event.detail.xhr);
      actionsInFlight[actionTarget] -= 1;
    }
    if (event.detail.successful) {
      report("");
      correctServerOffset(event.detail.xhr);
    }
  });

  document.addEventListener("htmx:beforeSend", function (event) {
    var xhr = event.detail.xhr;
    if (isLiveRegion(event.detail.elt) && xhr && !xhr.timeout && intervalMs > 0) {
      xhr.timeout = Math.max(MIN_LIVE_TIMEOUT_MS, LIVE_TIMEOUT_INTERVALS * intervalMs);
    }
  });

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) {
      catchUp();
    }
  });

  // A page restored from the back-forward cache shows old content, so refresh it at once.
  window.addEventListener("pageshow", function (event) {
    if (event.persisted) {
      missedTick = true;
      catchUp();
    }
  });

  // Keeping the reader's place

  function isCheckable(element) {
    return element.tagName === "INPUT" && (element.type === "checkbox" || element.type === "radio");
  }

  function isTextLike(element) {
    if (element.tagName === "TEXTAREA") {
      return true;
    }
    if (element.tagName !== "INPUT") {
      return false;
    }
    return ["hidden", "checkbox", "radio", "submit", "button", "reset", "file", "image"]
      .indexOf(element.type) === -1;
  }

  // Return the key that names `element` wherever it sits, or null. Links and
  // buttons name the task they act on through their URL, so focus stays on
  // the same task's link when new rows push the table down.
  function ownKey(element) {
    if (element.id) {
      return "#" + element.id;
    }
    if (isCheckable(element) && element.name) {
      return "check:" + element.name + "=" + element.value;
    }
    if (element.tagName === "A" && element.getAttribute("href")) {
      return "link:" + element.getAttribute("href");
    }
    if (element.tagName === "BUTTON" && element.form) {
      return "button:" + element.form.getAttribute("action") + ":" + element.name + "=" +
        element.value + ":" + element.textContent.trim();
    }
    return null;
  }

  // Map every element below `root` (and root itself) to its key, as the
  // contract at the top of this file describes. A key seen twice gets a
  // count appended, so that each element keeps a key of its own.
  function indexByKey(root) {
    var index = {};

    function visit(element, parentKey) {
      var counts = {};
      for (var child = element.firstElementChild; child; child = child.nextElementSibling) {
        counts[child.tagName] = (counts[child.tagName] || 0) + 1;
        var key = ownKey(child) || parentKey + "/" + child.tagName + counts[child.tagName];
        var unique = key;
        for (var repeat = 2; index[unique]; repeat++) {
          unique = key + "~" + repeat;
        }
        index[unique] = child;
        visit(child, unique);
      }
    }

    var rootKey = root.id ? "#" + root.id : "root";
    index[rootKey] = root;
    visit(root, rootKey);
    return index;
  }

  function selectedValues(select) {
    var values = [];
    for (var i = 0; i < select.options.length; i++) {
      if (select.options[i].selected) {
        values.push(select.options[i].value);
      }
    }
    return values;
  }

  function isDefaultSelection(select) {
    for (var i = 0; i < select.options.length; i++) {
      if (select.options[i].selected !== select.options[i].defaultSelected) {
        return false;
      }
    }
    return true;
  }

  function isAtEnd(element) {
    return element.scrollTop + element.clientHeight >= element.scrollHeight - 2;
  }

  function captureState(root, withControls) {
    var state = {
      windowX: window.scrollX,
      windowY: window.scrollY,
      scroll: {},
      controls: {},
      details: {},
      focus: null,
    };
    var index = indexByKey(root);
    var active = document.activeElement;

    Object.keys(index).forEach(function (key) {
      var element = index[key];
      if (element.scrollTop || element.scrollLeft || element.hasAttribute("data-scroll-end")) {
        state.scroll[key] = {
          top: element.scrollTop,
          left: element.scrollLeft,
          atEnd: isAtEnd(element),
        };
      }
      if (element.tagName === "DETAILS" && renderedOpen.has(element) &&
          renderedOpen.get(element) !== element.open) {
        state.details[key] = element.open;
      }
      if (withControls && isCheckable(element) && element.checked !== element.defaultChecked) {
        state.controls[key] = {checked: element.checked};
      } else if (withControls && isTextLike(element) && element.value !== element.defaultValue) {
        state.controls[key] = {value: element.value};
      } else if (withControls && element.tagName === "SELECT" && !isDefaultSelection(element)) {
        state.controls[key] = {selected: selectedValues(element)};
      }
      if (element === active && element !== root) {
        state.focus = {key: key, start: null, end: null};
        if (isTextLike(element)) {
          try {
            state.focus.start = element.selectionStart;
            state.focus.end = element.selectionEnd;
          } catch (error) {
            // Inputs such as type="number" have no text selection.
          }
        }
      }
    });
    return state;
  }

  function applyControl(element, control) {
    if ("checked" in control && isCheckable(element)) {
      element.checked = control.checked;
    } else if ("value" in control && isTextLike(element)) {
      element.value = control.value;
    } else if ("selected" in control && element.tagName === "SELECT") {
      for (var i = 0; i < element.options.length; i++) {
        element.options[i].selected = control.selected.indexOf(element.options[i].value) !== -1;
      }
    }
  }

  // Remember how the server rendered each new <details> in `root`, before
  // any state of the reader's is applied to it. Elements seen before keep
  // their record, as the reader may have toggled them since.
  function noteRenderedDetails(root) {
    var details = Array.prototype.slice.call(root.querySelectorAll("details"));
    if (root.tagName === "DETAILS") {
      details.push(root);
    }
    details.forEach(function (element) {
      if (!renderedOpen.has(element)) {
        renderedOpen.set(element, element.open);
      }
    });
  }

  function restoreState(root, state) {
    var index = indexByKey(root);

    Object.keys(state.details).forEach(function (key) {
      var element = index[key];
      if (element && element.tagName === "DETAILS" && element.open !== state.details[key]) {
        element.open = state.details[key];
      }
    });
    Object.keys(state.controls).forEach(function (key) {
      if (index[key]) {
        applyControl(index[key], state.controls[key]);
      }
    });
    Object.keys(index).forEach(function (key) {
      var element = index[key];
      var saved = state.scroll[key];
      if (saved && saved.atEnd && element.hasAttribute("data-scroll-end")) {
        element.scrollTop = element.scrollHeight;
      } else if (saved) {
        element.scrollTop = saved.top;
        element.scrollLeft = saved.left;
      } else if (element.hasAttribute("data-scroll-end")) {
        element.scrollTop = element.scrollHeight;
      }
    });
    if (state.focus && index[state.focus.key]) {
      var focused = index[state.focus.key];
      if (document.activeElement !== focused) {
        focused.focus({preventScroll: true});
      }
      if (state.focus.start !== null) {
        try {
          focused.setSelectionRange(state.focus.start, state.focus.end);
        } catch (error) {
          // The new element may not take a selection, and focus alone is enough.
        }
      }
    }
    if (window.scrollX !== state.windowX || window.scrollY !== state.windowY) {
      window.scrollTo(state.windowX, state.windowY);
    }
  }

  // Drop a refresh that an action overtook, or whose region is gone.
  function isStaleRefresh(detail) {
    var refresh = refreshRequests.get(detail.xhr);
    if (!refresh) {
      return false;
    }
    return refresh.actions !== (actionCount[refresh.id] || 0) ||
      !document.body.contains(detail.target);
  }

  document.addEventListener("htmx:beforeSwap", function (event) {
    var detail = event.detail;
    var target = detail.target;
    if (detail.shouldSwap && isStaleRefresh(detail)) {
      detail.shouldSwap = false;
      return;
    }
    if (!detail.shouldSwap || !target || !target.id) {
      return;
    }
    if (!isLiveRegion(target) && !isLiveRegion(detail.elt)) {
      return;
    }
    // Typed text and ticked boxes survive a refresh. After an action (a POST),
    // the server's fresh content wins.
    var verb = detail.requestConfig && detail.requestConfig.verb;
    pendingRestores.set(detail.xhr, {
      id: target.id,
      state: captureState(target, verb === "get"),
    });
  });

  // The element that contains a swap's new content: the target itself, or for
  // an outerHTML swap the element that replaced it.
  function swappedRoot(target) {
    if (!target) {
      return null;
    }
    if (document.body.contains(target)) {
      return target;
    }
    return target.id ? document.getElementById(target.id) : null;
  }

  document.addEventListener("htmx:afterSwap", function (event) {
    var pending = pendingRestores.get(event.detail.xhr);
    var root = pending ? document.getElementById(pending.id) : swappedRoot(event.detail.target);
    if (!root) {
      return;
    }
    noteRenderedDetails(root);
    if (pending) {
      pendingRestores.delete(event.detail.xhr);
      restoreState(root, pending.state);
    }
  });

  // Relative times

  function relativeText(milliseconds) {
    var seconds = Math.trunc(milliseconds / 1000);
    var magnitude = Math.abs(seconds);
    var amount;
    if (magnitude < 1) {
      return "now";
    }
    if (magnitude < 60) {
      amount = magnitude + " s";
    } else if (magnitude < 3600) {
      amount = Math.floor(magnitude / 60) + " min";
    } else if (magnitude < 86400) {
      amount = Math.floor(magnitude / 3600) + " h";
    } else {
      amount = Math.floor(magnitude / 86400) + " d";
    }
    return seconds > 0 ? "in " + amount : amount + " ago";
  }

  function updateTimes() {
    if (paused || document.hidden) {
      return;
    }
    var now = Date.now() + serverOffsetMs;
    var times = document.querySelectorAll("time[data-relative][datetime]");
    for (var i = 0; i < times.length; i++) {
      var instant = Date.parse(times[i].getAttribute("datetime"));
      if (isNaN(instant)) {
        continue;
      }
      var text = relativeText(instant - now);
      if (times[i].textContent !== text) {
        times[i].textContent = text;
      }
    }
  }

  function readServerOffset() {
    var meta = document.querySelector('meta[name="server-time"]');
    var instant = meta ? Date.parse(meta.getAttribute("content")) : NaN;
    if (!isNaN(instant)) {
      serverOffsetMs = instant - Date.now();
    }
  }

  function correctServerOffset(xhr) {
    var header = xhr && xhr.getResponseHeader ? xhr.getResponseHeader("Date") : null;
    var instant = header ? Date.parse(header) : NaN;
    if (isNaN(instant)) {
      return;
    }
    // The header drops the fraction of a second, on average half a second.
    var offset = instant + 500 - Date.now();
    if (Math.abs(offset - serverOffsetMs) > CLOCK_CORRECTION_MS) {
      serverOffsetMs = offset;
    }
  }

  // The pause control

  function readPaused() {
    try {
      return window.localStorage.getItem(PAUSE_KEY) === "paused";
    } catch (error) {
      return false;
    }
  }

  function storePaused(value) {
    try {
      if (value) {
        window.localStorage.setItem(PAUSE_KEY, "paused");
      } else {
        window.localStorage.removeItem(PAUSE_KEY);
      }
    } catch (error) {
      // Storage may be disabled, and then the choice lasts until the page is left.
    }
  }

  function intervalText() {
    var seconds = intervalMs / 1000;
    return seconds >= 1 && Number.isInteger(seconds) ? seconds + " s" : seconds.toFixed(1) + " s";
  }

  function showPauseState(button, state) {
    button.textContent = paused ? "Resume live updates" : "Pause live updates";
    button.classList.toggle("is-paused", paused);
    state.textContent = paused
      ? "Live updates paused."
      : "Live updates on, every " + intervalText() + ".";
  }

  function setPaused(value, button, state) {
    paused = value;
    storePaused(value);
    showPauseState(button, state);
    if (!paused) {
      missedTick = true;
      catchUp();
      updateTimes();
    }
  }

  function setUpPauseControl() {
    var button = document.getElementById("live-toggle");
    var state = document.getElementById("live-state");
    if (!button || !state) {
      return;
    }
    var control = button.closest("[data-live-control]") || button;
    var hasLiveContent = liveRegions().length > 0 ||
      document.querySelector("time[data-relative]") !== null;
    if (!hasLiveContent) {
      return;
    }
    showPauseState(button, state);
    control.hidden = false;
    button.addEventListener("click", function () {
      setPaused(!paused, button, state);
    });
    // Another tab of this site changed the choice.
    window.addEventListener("storage", function (event) {
      if (event.key === PAUSE_KEY && readPaused() !== paused) {
        setPaused(readPaused(), button, state);
      }
    });
  }

  // Start-up

  function start() {
    intervalMs = parseInt(document.body.getAttribute("data-refresh-interval") || "0", 10) || 0;
    paused = readPaused();
    readServerOffset();
    setUpPauseControl();
    noteRenderedDetails(document.body);

    var ends = document.querySelectorAll("[data-scroll-end]");
    for (var i = 0; i < ends.length; i++) {
      ends[i].scrollTop = ends[i].scrollHeight;
    }

    updateTimes();
    window.setInterval(updateTimes, 1000);
    startTimer();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
