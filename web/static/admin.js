// spamguard admin UI: keyboard shortcuts, "select all", confirmations. No inline scripts (CSP).
(function () {
  "use strict";

  function typing(target) {
    var tag = (target && target.tagName) || "";
    return tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || target.isContentEditable;
  }

  // The "Keyboard shortcuts" switch (the shortcuts_switch macro): on unless switched off in
  // this browser. Storage may be refused (privacy settings): the shortcuts then stay on.
  var SHORTCUTS = "spamguard.shortcuts";
  function shortcutsOn() {
    try { return window.localStorage.getItem(SHORTCUTS) !== "off"; } catch (e) { return true; }
  }
  document.querySelectorAll("input[data-shortcuts-switch]").forEach(function (box) {
    box.checked = shortcutsOn();
    box.closest("label").hidden = false;
    box.addEventListener("change", function () {
      try { window.localStorage.setItem(SHORTCUTS, box.checked ? "on" : "off"); } catch (e) { /* kept on */ }
    });
  });

  // Where the focus goes as the page loads, so that a keyboard or screen-reader user starts
  // at what the last action concerns, not at the top: the first field the server marked
  // wrong in a refused form (aria-invalid, described by the error); else an error that
  // names no field (a flash, tabindex="-1"), unless the page focuses a field of its own
  // (autofocus: the login form's password); else what the page marks data-focus after a
  // decision (the next message's card in the queue and a spot check, the label form's
  // note on a message's page).
  var start = document.querySelector('[aria-invalid="true"]')
      || (document.querySelector("[autofocus]") ? null
          : document.querySelector(".flash-error[tabindex]"))
      || document.querySelector("[data-focus]");
  if (start) {
    start.focus();
  }
  var described = ((start && start.getAttribute("aria-describedby")) || "").split(" ");

  // A status line the server wrote for what the last action did (data-announce: the review
  // queue's "Marked message 12 as spam.", a flash). Screen readers announce changes to a
  // live region, not what it held when the page loaded, so its text is put back a moment
  // after the load. Its height is kept meanwhile: nothing below it moves. Not the error just
  // focused, nor the one describing the field focused: that is read with the focus, and an
  // emptied description would be read as nothing.
  document.querySelectorAll("[data-announce]").forEach(function (region) {
    var text = region.textContent;
    if (!text.trim() || region === start || (region.id && described.indexOf(region.id) !== -1)) {
      return;
    }
    region.style.minHeight = region.offsetHeight + "px";
    region.textContent = "";
    window.setTimeout(function () { region.textContent = text; }, 150);
  });

  // A job running in the background ([data-poll]: a campaign rebuild, a retraining): the page
  // is fetched again every data-poll seconds, and once the page got has no [data-poll] (the
  // job is over), the region says so with a link to reload. Never a reload of its own: the
  // reader's place and focus stay. A redirect (the login ended) or an error: it stops
  // asking, and the region's "Check again" link is left, as without JavaScript.
  var polled = document.querySelector("[data-poll]");
  if (polled && window.fetch && window.DOMParser) {
    var every = 1000 * (parseFloat(polled.getAttribute("data-poll")) || 5);
    var asking = window.setInterval(function () {
      window.fetch(window.location.href, {credentials: "same-origin", cache: "no-store"})
        .then(function (response) {
          if (!response.ok || response.redirected) {
            window.clearInterval(asking);
            return null;
          }
          return response.text();
        })
        .then(function (html) {
          if (html === null || new DOMParser().parseFromString(html, "text/html")
              .querySelector("[data-poll]")) {
            return;
          }
          window.clearInterval(asking);
          var reload = document.createElement("a");
          reload.href = window.location.href;
          reload.textContent = "Reload";
          polled.textContent = "Finished: reload to see the result. ";  // a change: announced
          polled.appendChild(reload);
        }, function () { window.clearInterval(asking); });
    }, every);
  }

  // <button data-copy="id" data-copy-said="id2">: copies the value of field #id and says
  // so in the live region #id2 (the new API key). Shown only where the browser offers the
  // clipboard (https, or this machine); the field stays selectable text either way.
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    var field = document.getElementById(button.getAttribute("data-copy"));
    var said = document.getElementById(button.getAttribute("data-copy-said"));
    if (!field || !said || !navigator.clipboard || !navigator.clipboard.writeText) {
      return;
    }
    button.hidden = false;
    button.addEventListener("click", function () {
      said.textContent = "";  // said again on a second copy
      navigator.clipboard.writeText(field.value).then(function () {
        said.textContent = "Copied.";
      }, function () {
        field.select();
        said.textContent = "Not copied: the browser refused. The key is selected: copy it yourself.";
      });
    });
  });

  // Any enabled button with data-key="x" is pressed by the key x (review queue: s/h/k/u).
  document.addEventListener("keydown", function (event) {
    // A held key repeats: one label per press, not one per repeat (the next message).
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat || typing(event.target)
        || !shortcutsOn()) {
      return;
    }
    var key = event.key.toLowerCase();
    if (key.length !== 1 || !/^[a-z]$/.test(key)) {
      return;
    }
    var button = document.querySelector('button[data-key="' + key + '"]:not([disabled])');
    if (button) {
      event.preventDefault();
      if (button.form && typeof button.form.requestSubmit === "function") {
        button.form.requestSubmit(button);  // keeps the button's name/value in the form data
      } else {
        button.click();
      }
    }
  });

  // <input type="checkbox" data-select-all="ids"> toggles every checkbox named "ids".
  document.addEventListener("change", function (event) {
    var name = event.target.getAttribute && event.target.getAttribute("data-select-all");
    if (!name) {
      return;
    }
    var boxes = document.querySelectorAll('input[type="checkbox"][name="' + name + '"]');
    boxes.forEach(function (box) { box.checked = event.target.checked; });
  });

  // Keep one submission per form (a double press would otherwise review the next message);
  // a button with data-confirm="question" asks first (acts on many messages, or on what
  // every worker serves). Without JavaScript the button acts at once, as before.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = event.submitter && event.submitter.getAttribute("data-confirm");
    if (question && form.dataset.submitted !== "1" && !window.confirm(question)) {
      event.preventDefault();
      return;
    }
    if (form.dataset.submitted === "1") {
      event.preventDefault();
      return;
    }
    if (form.method.toLowerCase() === "post") {
      form.dataset.submitted = "1";
    }
  });
})();
