// Hybrid Search: small progressive enhancements. Every form also works without this file.
(function () {
  "use strict";

  function isImage(file) {
    return file && file.type && file.type.indexOf("image/") === 0;
  }

  // Put files into a file input (drop or paste), then tell the page they changed.
  function setFiles(input, files) {
    var transfer = new DataTransfer();
    for (var i = 0; i < files.length; i++) {
      if (!isImage(files[i])) continue;
      transfer.items.add(files[i]);
      if (!input.multiple) break;
    }
    if (!transfer.files.length) return false;
    input.files = transfer.files;
    input.dispatchEvent(new Event("change", { bubbles: true }));
    return true;
  }

  function showPreviews(zone, input) {
    var list = zone.querySelector("[data-previews]");
    if (!list) return;
    list.replaceChildren();
    for (var i = 0; i < input.files.length; i++) {
      var file = input.files[i];
      var item = document.createElement("li");
      var img = document.createElement("img");
      img.alt = "";
      img.src = URL.createObjectURL(file);
      var name = document.createElement("span");
      name.textContent = file.name || "pasted photo";
      item.append(img, name);
      list.append(item);
    }
    zone.classList.toggle("has-files", input.files.length > 0);
  }

  var zones = document.querySelectorAll("[data-dropzone]");
  zones.forEach(function (zone) {
    var input = zone.querySelector("input[type=file]");
    ["dragenter", "dragover"].forEach(function (type) {
      zone.addEventListener(type, function (event) {
        event.preventDefault();
        zone.classList.add("dragging");
      });
    });
    ["dragleave", "dragend"].forEach(function (type) {
      zone.addEventListener(type, function () { zone.classList.remove("dragging"); });
    });
    zone.addEventListener("drop", function (event) {
      event.preventDefault();
      zone.classList.remove("dragging");
      if (event.dataTransfer && event.dataTransfer.files.length) {
        setFiles(input, event.dataTransfer.files);
      }
    });
    input.addEventListener("change", function () {
      showPreviews(zone, input);
      if (zone.hasAttribute("data-autosubmit") && input.files.length && input.form) {
        input.form.requestSubmit();
      }
    });
  });

  // Pasting a photo anywhere on a page with a drop zone chooses it.
  document.addEventListener("paste", function (event) {
    if (!zones.length || !event.clipboardData) return;
    var files = Array.prototype.filter.call(event.clipboardData.files || [], isImage);
    if (!files.length) return;
    event.preventDefault();
    setFiles(zones[0].querySelector("input[type=file]"), files);
  });

  // The weight slider says what it means, and a new weight or fusion method searches again.
  var form = document.getElementById("search-form");
  var alpha = document.getElementById("alpha");
  var out = document.getElementById("alpha-out");
  if (form && alpha && out) {
    var describe = function () {
      var looks = Math.round(parseFloat(alpha.value) * 100);
      var text = (100 - looks) + "% words · " + looks + "% looks";
      out.value = text;
      alpha.setAttribute("aria-valuetext", text);
    };
    var hasQuery = function () {
      return form.elements.q.value.trim() || form.elements.q_image.value ||
        form.elements.like.value || (form.elements.image && form.elements.image.files.length);
    };
    alpha.addEventListener("input", describe);
    describe();
    alpha.addEventListener("change", function () { if (hasQuery()) form.requestSubmit(); });
    form.querySelectorAll("input[name=fusion]").forEach(function (radio) {
      radio.addEventListener("change", function () { if (hasQuery()) form.requestSubmit(); });
    });
  }

  // "/" jumps to the search box, as on many sites.
  document.addEventListener("keydown", function (event) {
    if (event.key !== "/" || event.ctrlKey || event.metaKey || event.altKey) return;
    var active = document.activeElement;
    var tag = active ? active.tagName : "";
    if (tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || (active && active.isContentEditable)) return;
    var box = document.getElementById("q");
    if (!box) {
      window.location.href = "/";
      return;
    }
    event.preventDefault();
    box.focus();
    box.select();
  });
})();
