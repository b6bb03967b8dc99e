/* carealarm: the one way the pages call central's API (same origin, the session cookie, JSON both ways).
 *
 * window.carealarmApi = { api(method, path, body?, options?), ApiError }
 * api() resolves to the parsed JSON answer (null for 204 No Content) and rejects with an ApiError that
 * carries the HTTP status and the server's detail (a validation error's items joined: "field: message").
 * options.headers adds request headers (the client page's X-Access-Reason). What a page does on a 401 or
 * a refusal is the page's own: it looks at err.status.
 */
(function () {
  "use strict";

  class ApiError extends Error {
    constructor(status, detail) {
      super(detail);
      this.name = "ApiError";
      this.status = status;
    }
  }

  function detailOf(data, response) {
    const detail = data && data.detail;
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) {
      return detail.map((d) => `${(d.loc || []).slice(-1)[0]}: ${d.msg}`).join("; ");
    }
    return response.statusText || `HTTP ${response.status}`;
  }

  async function api(method, path, body, options) {
    const headers = { Accept: "application/json", ...((options && options.headers) || {}) };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
    });
    if (response.status === 204) return null;
    const data = await response.json().catch(() => null);
    if (!response.ok) throw new ApiError(response.status, detailOf(data, response));
    return data;
  }

  window.carealarmApi = { api: api, ApiError: ApiError };
})();
