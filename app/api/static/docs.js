// Starts Swagger UI on the API's OpenAPI document. A file, not an inline script: the app's
// Content-Security-Policy allows scripts from this origin only.
(function () {
  var spec = document.currentScript.getAttribute("data-spec");
  window.addEventListener("load", function () {
    window.ui = SwaggerUIBundle({
      url: new URL(spec, window.location.href).href,
      dom_id: "#swagger-ui",
      deepLinking: true,
      presets: [SwaggerUIBundle.presets.apis],
      layout: "BaseLayout",
    });
  });
})();
