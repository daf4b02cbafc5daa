// waggle dashboard: small enhancements over pages that work without JavaScript.
// - "Test URL" runs in place (fetch) instead of reloading the page.
// - "Copy" buttons copy a secret to the clipboard.
"use strict";

document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("button[data-test-url]").forEach(function (button) {
    button.addEventListener("click", function (event) {
      var form = button.form;
      var output = document.getElementById("test-url-result");
      if (!form || !output || !window.fetch) {
        return; // the plain form post does the same, with a page reload
      }
      event.preventDefault();
      var body = new URLSearchParams(new FormData(form));
      output.className = "test-result pending";
      output.textContent = "Sending a signed sample event…";
      button.disabled = true;
      fetch(button.formAction, {
        method: "POST",
        body: body,
        credentials: "same-origin",
        headers: { "Accept": "application/json" }
      })
        .then(function (response) {
          var type = response.headers.get("Content-Type") || "";
          if (type.indexOf("application/json") === -1) {
            throw new Error("Your session has expired: reload the page and sign in again.");
          }
          return response.json();
        })
        .then(function (result) {
          output.className = "test-result " + (result.outcome || "error");
          output.textContent = result.summary || "No answer.";
        })
        .catch(function (error) {
          output.className = "test-result error";
          output.textContent = error && error.message ? error.message : "The test could not be sent.";
        })
        .finally(function () {
          button.disabled = false;
        });
    });
  });

  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    var source = document.getElementById(button.getAttribute("data-copy"));
    if (!source || !navigator.clipboard) {
      return;
    }
    button.hidden = false;
    button.addEventListener("click", function () {
      navigator.clipboard.writeText(source.textContent.trim()).then(
        function () {
          button.textContent = "Copied";
          setTimeout(function () { button.textContent = "Copy"; }, 2000);
        },
        function () {
          button.textContent = "Copy failed";
        }
      );
    });
  });
});
