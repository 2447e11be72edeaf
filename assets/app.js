/* Capacity Forecaster: browser-side helpers (pure UI logic, no data). */
(function () {
  "use strict";

  function prefix() {
    // requests_pathname_prefix of the Dash app ("/" unless served under a sub-path).
    try {
      var cfg = JSON.parse(document.getElementById("_dash-config").textContent);
      return cfg.requests_pathname_prefix || "/";
    } catch (e) {
      return "/";
    }
  }

  function withPrefix(path) {
    var p = prefix();
    return p === "/" ? path : p.replace(/\/$/, "") + path;
  }

  function withoutPrefix(path) {
    var p = prefix().replace(/\/$/, "");
    return p && path.indexOf(p) === 0 ? path.slice(p.length) || "/" : path;
  }

  function serverPath(id) {
    return withPrefix("/servers/" + encodeURIComponent(String(id)));
  }

  // Navigate inside the app the way dcc.Link does: push the URL, then tell Dash's Locations.
  function navigate(href) {
    window.history.pushState({}, "", href);
    window.dispatchEvent(new CustomEvent("_dashprivate_pushstate"));
    window.scrollTo(0, 0);
  }

  window.capfc = { prefix: prefix, withPrefix: withPrefix, serverPath: serverPath, navigate: navigate };

  window.dash_clientside = Object.assign({}, window.dash_clientside, {
    capfc: {
      // Filters -> query string (replaceState: no page re-render) and navbar links; the links
      // of scenario pages also carry the last what-if scenario.
      syncUrl: function (data, pathname, carry) {
        var cc = window.dash_clientside.callback_context;
        var outs = cc.outputs_list[0] || [];
        var query = (data && data.query) || "";
        if (data) {
          var params = new URLSearchParams(window.location.search);
          (data.keys || []).forEach(function (k) { params.delete(k); });
          new URLSearchParams(query).forEach(function (v, k) { params.append(k, v); });
          var qs = params.toString();
          var search = qs ? "?" + qs : "";
          if (search !== window.location.search) {
            window.history.replaceState(window.history.state, "", window.location.pathname + search + window.location.hash);
          }
        }
        var rel = withoutPrefix(pathname || window.location.pathname);
        var scenario = (carry && carry.query) || "";
        var hrefs = outs.map(function (o) {
          var q = query;
          if (scenario && (carry.pages || []).indexOf(o.id.index) >= 0) {
            q = q ? q + "&" + scenario : scenario;
          }
          return withPrefix(o.id.index) + (q ? "?" + q : "");
        });
        var active = outs.map(function (o) {
          var p = o.id.index;
          return p === "/" ? rel === "/" : rel === p || rel.indexOf(p + "/") === 0;
        });
        return [hrefs, active];
      },
      // Server picker -> the chosen server's page, keeping the filters.
      openServer: function (value, current) {
        if (!value || value === current) {
          return window.dash_clientside.no_update;
        }
        return serverPath(value) + window.location.search;
      }
    }
  });
})();
