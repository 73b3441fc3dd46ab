// Live lessons: the server sends an event when a lesson arrives or changes anywhere in the
// federation; the feed is then fetched again and swapped in, and a polite live region says so.
// Without JavaScript the page works the same, only without live updates.
(function () {
  "use strict";
  var feed = document.getElementById("feed");
  var status = document.getElementById("live-status");
  if (!feed || !window.EventSource) {
    return;
  }
  var events = new EventSource("/lessons/events");
  var busy = false;
  events.addEventListener("lessons", function () {
    if (busy) {
      return;
    }
    busy = true;
    fetch(window.location.href, { credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (text) {
        if (!text) {
          return;
        }
        var page = new DOMParser().parseFromString(text, "text/html");
        var fresh = page.getElementById("feed");
        if (fresh) {
          feed.replaceWith(fresh);
          feed = fresh;
          if (status) {
            status.textContent = status.getAttribute("data-message");
          }
        }
      })
      .catch(function () {})
      .then(function () { busy = false; });
  });
}());
