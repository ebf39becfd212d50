// Keyboard shortcuts and the edit preview. Every page works without this file:
// links and forms do the same things; this only saves keystrokes and a page load.
(function () {
  "use strict";

  function typing(event) {
    var t = event.target;
    return t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable);
  }

  function follow(rel) {
    var link = document.querySelector('a[rel="' + rel + '"]');
    if (link) { window.location.href = link.href; }
  }

  // The queue: j/k move a selection through the rows, Enter opens the selected one.
  var rows = Array.prototype.slice.call(document.querySelectorAll("#queue tbody tr[data-href]"));
  var selected = -1;
  function select(i) {
    if (!rows.length) { return; }
    selected = Math.max(0, Math.min(rows.length - 1, i));
    rows.forEach(function (r, n) { r.classList.toggle("selected", n === selected); });
    var link = rows[selected].querySelector("a");
    if (link) { link.focus(); }
  }

  function click(id) {
    var el = document.getElementById(id);
    if (el) { el.click(); }
  }

  function focus(id) {
    var el = document.getElementById(id);
    if (el) { el.focus(); el.scrollIntoView({ block: "center" }); }
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) { return; }
    if (typing(event)) {
      if (event.key === "Escape") { event.target.blur(); }
      return;
    }
    var key = event.key;
    if (key === "?") {
      var help = document.getElementById("help");
      if (help && help.showModal) { help.open ? help.close() : help.showModal(); }
    } else if (key === "j") {
      rows.length ? select(selected + 1) : follow("next");
    } else if (key === "k") {
      rows.length ? select(selected - 1) : follow("prev");
    } else if (key === "Enter" && rows.length && selected >= 0) {
      window.location.href = rows[selected].dataset.href;
    } else if (key === "a") {
      click("approve");
    } else if (key === "e") {
      focus("output");
    } else if (key === "r") {
      focus("comment");
    } else {
      return;
    }
    event.preventDefault();
  });

  // The edit form: "Save edit…" shows the diff in place, then "Submit edit" sends it.
  // Without this script the same button opens the preview page, which does the same.
  var form = document.getElementById("edit-form");
  var shown = document.getElementById("edit-preview");
  if (form && shown && window.fetch) {
    form.addEventListener("submit", function (event) {
      if (form.dataset.confirmed) { return; }
      event.preventDefault();
      var body = new FormData(form);
      body.append("fragment", "true");
      fetch(form.action, { method: "POST", body: body, credentials: "same-origin" })
        .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.text(); })
        .then(function (html) {
          shown.innerHTML = "<h3>Your edit, against the current version</h3>" + html;
          var send = document.createElement("button");
          send.type = "button";
          send.id = "submit-edit";
          send.textContent = "Submit edit";
          send.addEventListener("click", function () {
            form.dataset.confirmed = "1";
            form.action = "/ui/decide";
            form.submit();
          });
          shown.appendChild(send);
          send.focus();
        })
        .catch(function () { form.dataset.confirmed = "1"; form.submit(); });
    });
  }
})();
