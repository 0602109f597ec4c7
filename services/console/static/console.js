// Progressive enhancement for the console's server-rendered pages (no framework, no CDN):
// - [data-refresh=URL][data-interval=MS]: replace the element's content with URL's HTML
//   every MS milliseconds (paused while the tab is hidden); with [data-refresh-while=SEL],
//   only while the content still holds an element matching SEL (e.g. a dead-letter topic
//   still being indexed), then never again;
// - [data-confirm=TEXT] on a form: ask before submitting.
// Without JavaScript every page still works: reload to refresh.
(function () {
  "use strict";
  function refresh(el, timer) {
    if (document.hidden) return;
    fetch(el.dataset.refresh, { credentials: "same-origin", headers: { "X-Fragment": "1" } })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        el.innerHTML = html;
        el.classList.remove("stale");
        el.dataset.refreshed = String(Date.now());
        var until = el.dataset.refreshWhile;
        if (until && !el.querySelector(until)) {
          clearInterval(timer);
          el.dataset.refreshDone = "1";
        }
      })
      .catch(function () { el.classList.add("stale"); });
  }
  document.querySelectorAll("[data-refresh]").forEach(function (el) {
    var every = parseInt(el.dataset.interval || "5000", 10);
    var timer = setInterval(function () { refresh(el, timer); }, Math.max(every, 1000));
  });
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (ev) {
      if (!window.confirm(form.dataset.confirm)) ev.preventDefault();
    });
  });
})();
