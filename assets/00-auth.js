/* Capacity Forecaster: what the browser does when the server refuses a callback (app/auth.py).
 *
 * 401 (the sign-in has ended): reload the page once, which signs in again (oidc: the app sends
 * the browser to the identity provider; alb: the load balancer does) and comes back here.
 * 403 (the role does not allow it), 429 (a rate limit: too many what-ifs or exports in a minute)
 * and 413 (a request over the size limit): show the server's plain sentence in the page's error
 * alert, so a refused action is never silent.
 * Loaded before Dash's renderer (assets load in name order), so every callback fetch is seen.
 */
(function () {
  "use strict";
  if (!window.fetch || window.__capfcAuthFetch) {
    return;
  }
  window.__capfcAuthFetch = true;
  var original = window.fetch;
  var reloading = false;
  // refusals whose plain-text sentence the page shows (the text when the body is empty)
  var FALLBACK = {
    403: "This action is not allowed for your role.",
    413: "This request is too large.",
    429: "Too many requests: wait a little, then try again.",
  };

  function isCallback(input) {
    var url = typeof input === "string" ? input : input && input.url;
    return typeof url === "string" && url.indexOf("_dash-update-component") !== -1;
  }

  window.fetch = function (input, init) {
    return original.apply(this, arguments).then(function (resp) {
      if (!isCallback(input)) {
        return resp;
      }
      if (resp.status === 401 && !reloading) {
        reloading = true;
        window.location.reload();
      } else if (FALLBACK[resp.status] && window.dash_clientside && window.dash_clientside.set_props) {
        var status = resp.status;
        resp
          .clone()
          .text()
          .then(function (text) {
            window.dash_clientside.set_props("shell-error-alert", {
              is_open: true,
              children: String(text || FALLBACK[status]).slice(0, 300),
            });
          });
      }
      return resp;
    });
  };
})();
