// nginx in front of an LLM API, its budgets kept by an Allot gateway's sidecar API
// (POST /v1/check, POST /v1/settle on the gateway's admin listener). Debian's njs module
// (libnginx-mod-http-js). See cluster/nginx/README.md.
//
// - checkBody (js_set, for auth_request): the check of a route with request or concurrency
//   budgets only, settled at once (`settle: true`).
// - proxy (js_content, for token routes): check with the request's bound, forward to the
//   upstream, settle to the usage the upstream reported (refund on an upstream error).
// - denied (js_content of the auth_request error page): the refusal with its real status.

// The caller's API key: Authorization: Bearer <key>, or x-api-key.
function apiKey(r) {
    var auth = r.headersIn['Authorization'] || '';
    if (auth.toLowerCase().indexOf('bearer ') === 0) { return auth.substring(7).trim(); }
    return r.headersIn['x-api-key'] || '';
}

// A whole number from a header, or the fallback.
function count(value, fallback) {
    if (value === undefined || value === null || value === '') { return fallback; }
    var n = Number(value);
    return (isFinite(n) && n >= 0 && Math.floor(n) === n) ? n : -1;
}

function checkBody(r) {
    return JSON.stringify({ key: apiKey(r), route: r.variables.allot_route || 'other', settle: true });
}

// The request's bound, from the body only (a client must not choose its own cost): input
// bytes / 4 rounded up; output max_tokens (or max_completion_tokens), else 4096. The gateway
// checks it against the tier's ceilings (max_tokens, models).
function bound(body) {
    var parsed = null;
    try { parsed = JSON.parse(body || '{}'); } catch (e) { parsed = null; }
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) { parsed = {}; }
    var output = count(parsed.max_tokens !== undefined ? parsed.max_tokens : parsed.max_completion_tokens, 4096);
    return { model: parsed.model, stream: parsed.stream === true, input: Math.ceil((body || '').length / 4), output: output };
}

function fail(r, status, message) {
    r.headersOut['Content-Type'] = 'application/json';
    r.return(status, JSON.stringify({ error: { message: message, type: status >= 500 ? 'server_error' : 'invalid_request_error' } }));
}

function settle(r, what) {
    return r.subrequest('/_allot/settle', { method: 'POST', body: JSON.stringify(what) })
        .then(function (s) { if (s.status !== 200) { r.error('allot: settle answered ' + s.status + ': ' + s.responseText); } });
}

function reply(r, res) {
    var type = res.headersOut['Content-Type'];
    if (type) { r.headersOut['Content-Type'] = type; }
    ['retry-after', 'x-ratelimit-limit-requests', 'x-ratelimit-remaining-requests', 'x-ratelimit-limit-tokens',
     'x-ratelimit-remaining-tokens', 'x-allot-would-deny'].forEach(function (h) {
        if (res.headersOut[h]) { r.headersOut[h] = res.headersOut[h]; }
    });
    r.return(res.status, res.responseText);
}

// A whole number of tokens from an upstream's usage field, or undefined.
function tokens(v) { return (typeof v === 'number' && isFinite(v) && v >= 0 && Math.floor(v) === v) ? v : undefined; }

function proxy(r) {
    var body = r.requestText || '';
    var b = bound(body);
    if (b.stream) { fail(r, 400, 'streaming is not served through this nginx path: use the Allot gateway itself for streams'); return; }
    if (b.output < 0) { fail(r, 400, 'max_tokens must be a non-negative whole number'); return; }
    var check = { key: apiKey(r), route: r.variables.allot_route || 'chat', model: b.model, input_tokens: b.input, output_tokens: b.output };
    var reservation = null;
    r.subrequest('/_allot/check', { method: 'POST', body: JSON.stringify(check) })
        .then(function (c) {
            if (c.status !== 200) { reply(r, c); return; }
            reservation = JSON.parse(c.responseText).reservation_id;
            return r.subrequest('/_allot/upstream' + r.uri, { method: r.method, body: body })
                .then(function (u) {
                    // An upstream error is charged the request, no tokens (as the gateway's own proxy).
                    var what = { reservation_id: reservation, input_tokens: 0, output_tokens: 0 };
                    if (u.status < 400) {
                        var usage = {};
                        try { usage = JSON.parse(u.responseText).usage || {}; } catch (e) { usage = {}; }
                        var input = tokens(usage.prompt_tokens !== undefined ? usage.prompt_tokens : usage.input_tokens);
                        var output = tokens(usage.completion_tokens !== undefined ? usage.completion_tokens : usage.output_tokens);
                        // No usable usage in the answer: settled at the bound (charged in full).
                        what = { reservation_id: reservation, input_tokens: input !== undefined ? input : b.input,
                                 output_tokens: output !== undefined ? output : b.output };
                    }
                    reservation = null; // settled below: not given back on a later failure
                    return settle(r, what).then(function () { reply(r, u); });
                });
        })
        .catch(function (e) {
            r.error('allot: ' + e);
            // The upstream call failed after the check: given back.
            var done = reservation ? settle(r, { reservation_id: reservation, refund: true }) : Promise.resolve();
            done.then(function () { fail(r, 502, 'the gateway sidecar or the upstream failed'); },
                      function () { fail(r, 502, 'the gateway sidecar or the upstream failed'); });
        });
}

function denied(r) {
    var status = Number(r.variables.allot_status) || 403;
    r.headersOut['Content-Type'] = 'application/json';
    if (r.variables.allot_retry_after) { r.headersOut['Retry-After'] = r.variables.allot_retry_after; }
    r.return(status, JSON.stringify({ error: { message: 'refused by Allot (' + status + ')', type: status === 429 ? 'requests' : 'permission_error' } }));
}

export default { checkBody, proxy, denied };
