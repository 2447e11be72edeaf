/* Cell renderers for Dash AG Grid (looked up by name in columnDefs.cellRenderer). */
(function () {
  "use strict";
  var funcs = (window.dashAgGridComponentFunctions = window.dashAgGridComponentFunctions || {});

  // A server id as a real link: opens the server page inside the app, keeps the filters;
  // modifier-clicks (new tab/window) behave like any link.
  funcs.ServerLink = function (props) {
    var id = props.value;
    if (id === null || id === undefined || id === "") {
      return null;
    }
    var path = window.capfc.serverPath(id);
    function go(e) {
      if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) {
        return;
      }
      e.preventDefault();
      window.capfc.navigate(path + window.location.search);
    }
    return React.createElement(
      "a",
      { href: path + window.location.search, onClick: go, className: "server-link" },
      String(id)
    );
  };

  // Severity as a coloured badge (class names only from a fixed set).
  var SEVERITIES = { critical: 1, high: 1, medium: 1, low: 1, none: 1 };
  funcs.SeverityBadge = function (props) {
    var v = props.value;
    if (!v) {
      return null;
    }
    var cls = SEVERITIES[v] ? "sev-" + v : "sev-none";
    return React.createElement("span", { className: "sev-badge " + cls }, String(v));
  };
})();
