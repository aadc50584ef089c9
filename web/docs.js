// The API docs page: Swagger UI over the document this server generates.
window.addEventListener('DOMContentLoaded', function () {
  window.ui = window.SwaggerUIBundle({
    url: '/api/openapi.json',
    dom_id: '#swagger-ui',
    deepLinking: true,
    // Nothing leaves the machine: no validator badge calling a public service.
    validatorUrl: null,
    persistAuthorization: false,
  });
});
