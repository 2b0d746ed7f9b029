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

// The request's bound: from x-allot-input-tokens / x-allot-output-tokens when the client
// sends them, else from the body (input: bytes / 4 rounded up; output: max_tokens).
function bound(r, body) {
    var parsed = {};
    try { parsed = JSON.parse(body || '{}'); } catch (e) { parsed = {}; }
    var input = count(r.headersIn['x-allot-input-tokens'], Math.ceil((body || '').length / 4));
    var output = count(r.headersIn['x-allot-output-tokens'], parsed.max_tokens || parsed.max_completion_tokens || 256);
    return { model: parsed.model, input: input, output: output };
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

function proxy(r) {
    var body = r.requestText || '';
    var b = bound(r, body);
    var check = { key: apiKey(r), route: r.variables.allot_route || 'chat', model: b.model, input_tokens: b.input, output_tokens: b.output };
    r.subrequest('/_allot/check', { method: 'POST', body: JSON.stringify(check) })
        .then(function (c) {
            if (c.status !== 200) { reply(r, c); return; }
            var reservation = JSON.parse(c.responseText).reservation_id;
            return r.subrequest('/_allot/upstream' + r.uri, { method: r.method, body: body })
                .then(function (u) {
                    var settle = { reservation_id: reservation, refund: true };
                    if (u.status < 400) {
                        var usage = {};
                        try { usage = JSON.parse(u.responseText).usage || {}; } catch (e) { usage = {}; }
                        var input = usage.prompt_tokens !== undefined ? usage.prompt_tokens : usage.input_tokens;
                        var output = usage.completion_tokens !== undefined ? usage.completion_tokens : usage.output_tokens;
                        // No usage in the answer: settle at the bound (charged in full).
                        settle = { reservation_id: reservation, input_tokens: input !== undefined ? input : b.input,
                                   output_tokens: output !== undefined ? output : b.output };
                    }
                    return r.subrequest('/_allot/settle', { method: 'POST', body: JSON.stringify(settle) })
                        .then(function () { reply(r, u); });
                });
        })
        .catch(function (e) {
            r.error('allot: ' + e);
            r.return(502, JSON.stringify({ error: { message: 'the gateway sidecar or the upstream failed', type: 'server_error' } }));
        });
}

function denied(r) {
    var status = Number(r.variables.allot_status) || 403;
    r.headersOut['Content-Type'] = 'application/json';
    if (r.variables.allot_retry_after) { r.headersOut['Retry-After'] = r.variables.allot_retry_after; }
    r.return(status, JSON.stringify({ error: { message: 'refused by Allot (' + status + ')', type: status === 429 ? 'requests' : 'permission_error' } }));
}

export default { checkBody, proxy, denied };
