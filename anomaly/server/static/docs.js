// Swagger UI for /openapi.json. With a server token, the one the dashboard stored for this tab (sessionStorage)
// is sent on the spec request and on "Try it out" calls.
import { getToken } from "./api.js";

window.ui = window.SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [window.SwaggerUIBundle.presets.apis, window.SwaggerUIBundle.SwaggerUIStandalonePreset],
  layout: "BaseLayout",
  requestInterceptor: (req) => {
    const token = getToken();
    if (token) req.headers.Authorization = `Bearer ${token}`;
    return req;
  },
});
