// Live updates: every page's #live part is fetched again (?fragment=1) and swapped in when it changed.
// Paused while the operator is choosing dead letters or typing inside it, so nothing moves under them.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || !live.dataset.pollMs) return;
  var every = parseInt(live.dataset.pollMs, 10);
  function busy() {
    if (live.contains(document.activeElement) && document.activeElement !== document.body) return true;
    return live.querySelector("input[type=checkbox]:checked") !== null;
  }
  function refresh() {
    if (document.hidden || busy()) return;
    var url = new URL(window.location.href);
    url.searchParams.set("fragment", "1");
    fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html !== null && html.trim() !== live.innerHTML.trim() && !busy()) {
          live.innerHTML = html;
          live.dataset.refreshedAt = new Date().toISOString();
        }
      })
      .catch(function () { /* the next tick tries again */ });
  }
  setInterval(refresh, every);
  document.addEventListener("change", function (e) {
    var all = e.target.closest && e.target.closest("[data-select-all]");
    if (!all) return;
    live.querySelectorAll("input[name=sel]:not(:disabled)").forEach(function (box) { box.checked = all.checked; });
  });
})();
