vcl 4.1;
# StoryForge's self-hosted CDN: Varnish Cache 7 (Debian's `varnish`) with vmod_xkey
# (Debian's `varnish-modules`) in front of the origin. `storyforge dev --cdn` and the
# tests run this file as it is; docs/DEPLOY.md ("Self-hosted CDN: Varnish") runs it in
# production. What differs per site (the origin's address, who may purge, the origin
# secret) is in storyforge-site.vcl, found on varnishd's vcl_path (an example beside
# this file).
#
# The policy, in short:
# - the origin's Cache-Control decides (RFC 9111 §5.2.2): no TTL of our own; an answer
#   without one, or private/no-store/no-cache, a 401/403, or with Set-Cookie is never
#   shared (hit-for-miss: decided again on the next fetch);
# - the key is the path and the query parameters the origin reads (the viewer's
#   signature: HMAC token or CloudFront policy; a thumbnail's time and width), sorted;
#   any other parameter (tracking, CMCD, cache busters) is dropped before the lookup
#   and never reaches the origin;
# - stale-while-revalidate (RFC 5861 §3) is grace: within it a stale copy is answered
#   while Varnish fetches the new one in the background; past it, only while the
#   origin is down (its probe, where the site has one) or answers 5xx;
# - cache tags (the origin's Surrogate-Key, core/cachetags.py) index every object for
#   `PURGE` (xkey-purge: hard; xkey-softpurge: soft, the copy kept for grace) from
#   the storyforge_purgers ACL, and are stripped before the viewer;
# - ranges of cached objects (a .ts) are answered from the cache (Varnish's range
#   support), and so are 304s to conditional requests; HEAD is fetched as GET.

import std;
import xkey;

# backend storyforge_origin, acl storyforge_purgers, sub storyforge_origin_request
include "storyforge-site.vcl";

sub vcl_recv {
    set req.backend_hint = storyforge_origin;
    unset req.http.sf-swr;
    if (req.method == "PURGE") {
        if (client.ip !~ storyforge_purgers) {
            return (synth(403, "Forbidden"));
        }
        if (req.http.xkey-purge) {
            set req.http.sf-purged = xkey.purge(req.http.xkey-purge);
        } elsif (req.http.xkey-softpurge) {
            set req.http.sf-purged = xkey.softpurge(req.http.xkey-softpurge);
        } else {
            return (synth(400, "xkey-purge or xkey-softpurge required"));
        }
        return (synth(200, "Purged " + req.http.sf-purged));
    }
    if (req.restarts == 0) {
        unset req.http.sf-fresh;
        unset req.http.sf-stale-ok;
        unset req.http.sf-cacheable;
    }
    # uploads, API writes and CORS preflights go to the origin as they are
    if (req.method != "GET" && req.method != "HEAD") {
        return (pass);
    }
    # the JSON API, health and metrics are never shared (they say so too)
    if (req.url !~ "^/(v|e|a|static|player)/" || req.http.Authorization) {
        return (pass);
    }
    # the origin reads no cookie on these paths (CloudFront's signed cookies are
    # verified by CloudFront)
    unset req.http.Cookie;
    if (req.url ~ "\?") {
        # keep exp kid ip sig (HMAC token), Policy Signature Key-Pair-Id Expires
        # (CloudFront), time width (a thumbnail at a moment); drop the rest
        set req.url = regsuball(req.url,
            "([?&])(?!(?:exp|kid|ip|sig|Policy|Signature|Key-Pair-Id|Expires|time|width)=)[^&]*",
            "\1");
        set req.url = regsuball(req.url, "&{2,}", "&");
        set req.url = regsub(req.url, "\?&", "?");
        set req.url = regsub(req.url, "[?&]$", "");
        set req.url = std.querysort(req.url);
    }
    set req.http.sf-cacheable = "1";
    if (req.http.sf-stale-ok) {
        # the origin failed (vcl_synth): any copy kept is better (req.grace survives
        # a restart)
        set req.grace = 24h;
    } elsif (req.http.sf-fresh) {
        # vcl_hit found the copy past its stale-while-revalidate: fetch it now
        set req.grace = 0s;
    }
    return (hash);
}

sub vcl_hash {
    # one site: the path and the query kept above, whatever the Host
    hash_data(req.url);
    return (lookup);
}

sub vcl_hit {
    if (obj.ttl >= 0s) {
        return (deliver);
    }
    # stale: answered (and fetched again in the background) within its
    # stale-while-revalidate, while the origin is down, or after it answered 5xx
    if (req.http.sf-stale-ok
        || obj.ttl + std.duration(obj.http.sf-swr, 0s) >= 0s
        || !std.healthy(req.backend_hint)) {
        return (deliver);
    }
    set req.http.sf-fresh = "1";
    return (restart);
}

sub vcl_backend_fetch {
    call storyforge_origin_request;
    unset bereq.http.sf-fresh;
    unset bereq.http.sf-cacheable;
    # sf-stale-ok stays: vcl_backend_response reads it (the origin ignores it)
    return (fetch);
}

sub vcl_backend_response {
    # the origin's cache tags index the object for xkey (and are never delivered)
    if (beresp.http.Surrogate-Key) {
        set beresp.http.xkey = beresp.http.Surrogate-Key;
        unset beresp.http.Surrogate-Key;
    }
    if (beresp.status >= 500 && (bereq.is_bgfetch || !bereq.http.sf-stale-ok)) {
        # keep the stale copy (a fetch that stored anything would replace it): a
        # background fetch leaves it answered; a client's fetch fails to vcl_synth,
        # which looks it up again allowing stale copies (sf-stale-ok), and the origin's
        # own answer is passed on only when there is none
        return (abandon);
    }
    if (beresp.ttl <= 0s
        || beresp.status == 401
        || beresp.status == 403
        || beresp.http.Set-Cookie
        || beresp.http.Cache-Control ~ "(?i)(no-store|no-cache|private)"
        || !(beresp.http.Cache-Control || beresp.http.Expires)
        || beresp.http.Vary == "*") {
        # not shared: hit-for-miss for a few seconds (no request waits on another's)
        set beresp.ttl = 5s;
        set beresp.grace = 0s;
        set beresp.uncacheable = true;
        return (deliver);
    }
    # Varnish read stale-while-revalidate into beresp.grace (else its default_grace)
    if (beresp.http.Cache-Control !~ "(?i)stale-while-revalidate") {
        set beresp.grace = 0s;
    }
    set beresp.http.sf-swr = "" + beresp.grace + "s";
    # kept past that for when the origin is down or failing (vcl_hit, vcl_deliver): a
    # site policy in the spirit of stale-if-error (RFC 5861 §4), which the origin
    # does not send
    set beresp.grace = 6h;
    return (deliver);
}

sub vcl_backend_error {
    # the origin could not be reached: as a 5xx above
    if (bereq.is_bgfetch || !bereq.http.sf-stale-ok) {
        return (abandon);
    }
    return (deliver);
}

sub vcl_deliver {
    unset resp.http.xkey;
    unset resp.http.Surrogate-Key;
    unset resp.http.sf-swr;
    if (obj.uncacheable) {
        set resp.http.X-Cache = "PASS";
    } elsif (obj.hits > 0) {
        set resp.http.X-Cache = "HIT";
    } else {
        set resp.http.X-Cache = "MISS";
    }
    return (deliver);
}

sub vcl_synth {
    # a client's fetch failed (the origin down or 5xx): a stale copy is better, if
    # there is one (one more lookup, allowing stale copies)
    if (resp.status == 503 && req.http.sf-cacheable && !req.http.sf-stale-ok
        && req.restarts < 3) {
        set req.http.sf-stale-ok = "1";
        return (restart);
    }
    unset resp.http.xkey;
    unset resp.http.Surrogate-Key;
    return (deliver);
}
