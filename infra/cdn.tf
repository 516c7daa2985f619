# CloudFront in front of the origin server. The origin is the ALB (not S3): stitched
# scene playlists and storyboards are built by the origin from Postgres, per-clip
# playlists are rewritten per viewer when signing is on, and the origin checks HMAC
# tokens and the origin-secret header itself.
#
#   /v/*  scene media and documents     /e/*  exports     /a/*  assets
#   (/a/scenes/*/reference/* is signed like /v/ and /e/)
#   anything else: 404 at the edge (the JSON API and the player page are not on the CDN)

locals {
  cdn_base_url = "https://${var.cdn_aliases[0]}"

  # The query parameters each SIGNING mode puts on media URLs (README "Signed URLs";
  # core/signing.py). tests/integration/test_infra.py compares these with the code.
  signing_query_strings = {
    none       = []
    cloudfront = ["Policy", "Signature", "Key-Pair-Id"]
    hmac       = ["exp", "kid", "ip", "sig"]
  }
  signing_query = local.signing_query_strings[var.signing_mode]

  # Which requests must have the viewer's authorisation in their cache key:
  # - documents (playlists, storyboard VTTs) carry it on every URI inside them, so two
  #   viewers must never share a cached copy;
  # - media (segments, images, exports) only in hmac mode, where the origin is the one
  #   that verifies: a copy cached without the token would be served to anyone. In
  #   cloudfront mode CloudFront verifies the signature before it looks in the cache,
  #   so one cached segment serves every signed viewer.
  document_key_query = local.signing_query
  media_key_query    = var.signing_mode == "hmac" ? local.signing_query : []

  # One cache policy per file kind. Each TTL is the max-age of the Cache-Control the
  # origin sends for that kind (core/layout.py); default = max so CloudFront never
  # keeps a file longer than the origin says, min = 0 so `private`/`no-store` answers
  # are not cached. tests/integration/test_infra.py compares them with core.layout.
  cache_policies = {
    # 720p_0001.ts: layout.IMMUTABLE
    segment_media = { ttl = 31536000, query = local.media_key_query, compress = false, comment = "HLS media segments (.ts): immutable" }
    # {segmentId}/720p.m3u8, master.m3u8: layout.SEGMENT_PLAYLIST_CACHE
    segment_playlist = { ttl = 31536000, query = local.document_key_query, compress = true, comment = "per-clip playlists: immutable after publication" }
    # {segmentId}/thumbnail.jpg, storyboard.jpg: layout.file_meta(".jpg")
    segment_image = { ttl = 604800, query = local.media_key_query, compress = false, comment = "per-clip thumbnails and storyboard sprites" }
    # {segmentId}/storyboard.vtt: layout.file_meta(".vtt")
    segment_vtt = { ttl = 604800, query = local.document_key_query, compress = true, comment = "per-clip storyboard VTT" }
    # {sceneId}/master.m3u8, {profile}.m3u8, storyboard.vtt: layout.SCENE_PLAYLIST_CACHE
    scene_document = { ttl = 5, query = local.document_key_query, compress = true, comment = "stitched scene playlists and storyboard: short, revalidated by ETag" }
    # /e/{sceneId}/full_720p.mp4: layout.EXPORT_META
    export = { ttl = 86400, query = local.media_key_query, compress = false, comment = "compiled scene MP4s" }
    # /a/...: layout.ASSET_CACHE (assets change in place; the ETag revalidates)
    asset = { ttl = 300, query = [], compress = false, comment = "avatars, topic icons, posters" }
    # /a/scenes/{sceneId}/reference/...: layout.ASSET_CACHE, signed like the scene's media
    reference = { ttl = 300, query = local.media_key_query, compress = false, comment = "scene references (portraits, style frame, voice anchor)" }
  }
}

resource "aws_cloudfront_cache_policy" "kind" {
  for_each = local.cache_policies

  name        = "${var.name}-${var.environment}-${replace(each.key, "_", "-")}"
  comment     = each.value.comment
  min_ttl     = 0
  default_ttl = each.value.ttl
  max_ttl     = each.value.ttl

  parameters_in_cache_key_and_forwarded_to_origin {
    cookies_config {
      cookie_behavior = "none"
    }
    # The origin answers CORS per Origin (Vary: Origin when CORS_ORIGINS is a list).
    headers_config {
      header_behavior = "whitelist"
      headers {
        items = ["Origin"]
      }
    }
    query_strings_config {
      query_string_behavior = length(each.value.query) > 0 ? "whitelist" : "none"
      dynamic "query_strings" {
        for_each = length(each.value.query) > 0 ? [each.value.query] : []
        content {
          items = query_strings.value
        }
      }
    }
    enable_accept_encoding_gzip   = each.value.compress
    enable_accept_encoding_brotli = each.value.compress
  }
}

# Other files under /v/ (source.mp4, metadata.json, numbered storyboard sprites): the
# origin's own Cache-Control decides; without one nothing is cached.
resource "aws_cloudfront_cache_policy" "origin_controlled" {
  name        = "${var.name}-${var.environment}-origin-controlled"
  comment     = "follow the origin's Cache-Control"
  min_ttl     = 0
  default_ttl = 0
  max_ttl     = 31536000

  parameters_in_cache_key_and_forwarded_to_origin {
    cookies_config {
      cookie_behavior = "none"
    }
    headers_config {
      header_behavior = "whitelist"
      headers {
        items = ["Origin"]
      }
    }
    query_strings_config {
      query_string_behavior = length(local.media_key_query) > 0 ? "whitelist" : "none"
      dynamic "query_strings" {
        for_each = length(local.media_key_query) > 0 ? [local.media_key_query] : []
        content {
          items = query_strings.value
        }
      }
    }
  }
}

# What reaches the origin besides the cache key: exactly the signing parameters (the
# origin verifies hmac tokens, and copies a CloudFront policy onto the URIs of the
# documents it emits). No cookies, no other headers, no other query strings.
resource "aws_cloudfront_origin_request_policy" "signed" {
  name    = "${var.name}-${var.environment}-signed-media"
  comment = "forward the ${var.signing_mode} signing query to the origin"

  cookies_config {
    cookie_behavior = "none"
  }
  headers_config {
    header_behavior = "none"
  }
  query_strings_config {
    query_string_behavior = length(local.signing_query) > 0 ? "whitelist" : "none"
    dynamic "query_strings" {
      for_each = length(local.signing_query) > 0 ? [local.signing_query] : []
      content {
        items = query_strings.value
      }
    }
  }
}

resource "aws_cloudfront_response_headers_policy" "security" {
  name    = "${var.name}-${var.environment}-security"
  comment = "HSTS and nosniff on every answer; CORS stays with the origin; cache tags removed"

  security_headers_config {
    strict_transport_security {
      access_control_max_age_sec = 31536000
      include_subdomains         = true
      preload                    = true
      override                   = true
    }
    content_type_options {
      override = true
    }
    referrer_policy {
      referrer_policy = "strict-origin-when-cross-origin"
      override        = false
    }
  }

  # the origin's cache tags (CACHE_TAG_HEADER, core/cachetags.py) are for a tag-purging
  # CDN; CloudFront invalidates by path and never shows them to viewers
  remove_headers_config {
    items {
      header = "Surrogate-Key"
    }
  }
}

# ---------------------------------------------------------------------------- signed URLs
# signing_mode = cloudfront: CloudFront verifies every /v/ and /e/ request against this
# key group. The origin signs with the private half (CLOUDFRONT_PRIVATE_KEY, from
# var.cloudfront_private_key_secret_arn) and names the public key's id in Key-Pair-Id
# (CLOUDFRONT_KEY_PAIR_ID = aws_cloudfront_public_key.signing[0].id).

resource "aws_cloudfront_public_key" "signing" {
  count       = var.signing_mode == "cloudfront" ? 1 : 0
  name        = "${var.name}-${var.environment}-signing"
  comment     = "verifies StoryForge signed URLs and cookies"
  encoded_key = var.cloudfront_public_key_pem

  lifecycle {
    precondition {
      condition     = var.cloudfront_public_key_pem != "" && var.cloudfront_private_key_secret_arn != ""
      error_message = "signing_mode = cloudfront needs cloudfront_public_key_pem and cloudfront_private_key_secret_arn."
    }
  }
}

resource "aws_cloudfront_key_group" "signing" {
  count   = var.signing_mode == "cloudfront" ? 1 : 0
  name    = "${var.name}-${var.environment}-signing"
  comment = "keys whose signatures CloudFront accepts for /v/ and /e/"
  items   = [aws_cloudfront_public_key.signing[0].id]
}

locals {
  trusted_key_groups = var.signing_mode == "cloudfront" ? [aws_cloudfront_key_group.signing[0].id] : []
}

# Requests outside /v/, /e/ and /a/ never reach the origin through the CDN.
resource "aws_cloudfront_function" "not_found" {
  name    = "${var.name}-${var.environment}-not-found"
  runtime = "cloudfront-js-2.0"
  comment = "404 for paths the CDN does not serve"
  publish = true
  code    = <<-EOT
    function handler(event) {
      return {
        statusCode: 404,
        statusDescription: "Not Found",
        headers: { "content-type": { value: "application/json" } },
        body: { encoding: "text", data: '{"error": {"code": "not_found", "message": "not served here"}}' }
      };
    }
  EOT
}

# ---------------------------------------------------------------------------- distribution

resource "aws_cloudfront_distribution" "cdn" {
  #checkov:skip=CKV_AWS_68:WAF is optional (var.web_acl_id attaches the account's web ACL); media is authorised by signatures, the origin by its secret header
  #checkov:skip=CKV2_AWS_47:WAF is optional (var.web_acl_id); the origin runs no Java, so the Log4j rule set protects nothing here
  #checkov:skip=CKV_AWS_310:one origin by design: the ALB spreads over stateless tasks in several AZs; there is no second origin to fail over to
  #checkov:skip=CKV_AWS_374:no geo restriction: StoryForge serves viewers everywhere
  #checkov:skip=CKV_AWS_305:no root object: "/" is answered 404 by the not_found function
  #checkov:skip=CKV2_AWS_46:the origin is the ALB, not S3; the only bucket connected is the access-log destination
  enabled         = true
  comment         = "${var.name}-${var.environment}: HLS origin"
  aliases         = var.cdn_aliases
  price_class     = var.price_class
  http_version    = "http2and3"
  is_ipv6_enabled = true
  web_acl_id      = var.web_acl_id

  origin {
    origin_id   = "origin-alb"
    domain_name = var.origin_domain_name

    custom_origin_config {
      http_port                = 80
      https_port               = 443
      origin_protocol_policy   = "https-only"
      origin_ssl_protocols     = ["TLSv1.2"]
      origin_keepalive_timeout = 60
      # exports and long segments stream from S3 through the origin
      origin_read_timeout = 60
    }

    # The origin refuses /v/ and /e/ requests without it (ORIGIN_SECRET), and the ALB
    # forwards only requests that carry it (or /api/ from api_allowed_cidrs).
    custom_header {
      name  = var.origin_secret_header
      value = random_password.origin_secret.result
    }
  }

  # Order matters: CloudFront uses the first pattern that matches. `*` also matches
  # "/", so /v/*/*/... (a clip's files) must come before /v/*.m3u8 (the scene's).
  ordered_cache_behavior {
    path_pattern               = "/v/*/*/*.ts"
    target_origin_id           = "origin-alb"
    allowed_methods            = ["GET", "HEAD", "OPTIONS"]
    cached_methods             = ["GET", "HEAD"]
    viewer_protocol_policy     = "https-only"
    compress                   = false
    cache_policy_id            = aws_cloudfront_cache_policy.kind["segment_media"].id
    origin_request_policy_id   = aws_cloudfront_origin_request_policy.signed.id
    response_headers_policy_id = aws_cloudfront_response_headers_policy.security.id
    trusted_key_groups         = local.trusted_key_groups
  }

  ordered_cache_behavior {
    path_pattern               = "/v/*/*/*.m3u8"
    target_origin_id           = "origin-alb"
    allowed_methods            = ["GET", "HEAD", "OPTIONS"]
    cached_methods             = ["GET", "HEAD"]
    viewer_protocol_policy     = "https-only"
    compress                   = true
    cache_policy_id            = aws_cloudfront_cache_policy.kind["segment_playlist"].id
    origin_request_policy_id   = aws_cloudfront_origin_request_policy.signed.id
    response_headers_policy_id = aws_cloudfront_response_headers_policy.security.id
    trusted_key_groups         = local.trusted_key_groups
  }

  ordered_cache_behavior {
    path_pattern               = "/v/*/*/*.jpg"
    target_origin_id           = "origin-alb"
    allowed_methods            = ["GET", "HEAD", "OPTIONS"]
    cached_methods             = ["GET", "HEAD"]
    viewer_protocol_policy     = "https-only"
    compress                   = false
    cache_policy_id            = aws_cloudfront_cache_policy.kind["segment_image"].id
    origin_request_policy_id   = aws_cloudfront_origin_request_policy.signed.id
    response_headers_policy_id = aws_cloudfront_response_headers_policy.security.id
    trusted_key_groups         = local.trusted_key_groups
  }

  ordered_cache_behavior {
    path_pattern               = "/v/*/*/*.vtt"
    target_origin_id           = "origin-alb"
    allowed_methods            = ["GET", "HEAD", "OPTIONS"]
    cached_methods             = ["GET", "HEAD"]
    viewer_protocol_policy     = "https-only"
    compress                   = true
    cache_policy_id            = aws_cloudfront_cache_policy.kind["segment_vtt"].id
    origin_request_policy_id   = aws_cloudfront_origin_request_policy.signed.id
    response_headers_policy_id = aws_cloudfront_response_headers_policy.security.id
    trusted_key_groups         = local.trusted_key_groups
  }

  ordered_cache_behavior {
    path_pattern               = "/v/*.m3u8"
    target_origin_id           = "origin-alb"
    allowed_methods            = ["GET", "HEAD", "OPTIONS"]
    cached_methods             = ["GET", "HEAD"]
    viewer_protocol_policy     = "https-only"
    compress                   = true
    cache_policy_id            = aws_cloudfront_cache_policy.kind["scene_document"].id
    origin_request_policy_id   = aws_cloudfront_origin_request_policy.signed.id
    response_headers_policy_id = aws_cloudfront_response_headers_policy.security.id
    trusted_key_groups         = local.trusted_key_groups
  }

  ordered_cache_behavior {
    path_pattern               = "/v/*.vtt"
    target_origin_id           = "origin-alb"
    allowed_methods            = ["GET", "HEAD", "OPTIONS"]
    cached_methods             = ["GET", "HEAD"]
    viewer_protocol_policy     = "https-only"
    compress                   = true
    cache_policy_id            = aws_cloudfront_cache_policy.kind["scene_document"].id
    origin_request_policy_id   = aws_cloudfront_origin_request_policy.signed.id
    response_headers_policy_id = aws_cloudfront_response_headers_policy.security.id
    trusted_key_groups         = local.trusted_key_groups
  }

  ordered_cache_behavior {
    path_pattern               = "/v/*"
    target_origin_id           = "origin-alb"
    allowed_methods            = ["GET", "HEAD", "OPTIONS"]
    cached_methods             = ["GET", "HEAD"]
    viewer_protocol_policy     = "https-only"
    compress                   = false
    cache_policy_id            = aws_cloudfront_cache_policy.origin_controlled.id
    origin_request_policy_id   = aws_cloudfront_origin_request_policy.signed.id
    response_headers_policy_id = aws_cloudfront_response_headers_policy.security.id
    trusted_key_groups         = local.trusted_key_groups
  }

  ordered_cache_behavior {
    path_pattern               = "/e/*"
    target_origin_id           = "origin-alb"
    allowed_methods            = ["GET", "HEAD", "OPTIONS"]
    cached_methods             = ["GET", "HEAD"]
    viewer_protocol_policy     = "https-only"
    compress                   = false
    cache_policy_id            = aws_cloudfront_cache_policy.kind["export"].id
    origin_request_policy_id   = aws_cloudfront_origin_request_policy.signed.id
    response_headers_policy_id = aws_cloudfront_response_headers_policy.security.id
    trusted_key_groups         = local.trusted_key_groups
  }

  # A scene's references are as private as the scene (origin/http/auth.py): signed,
  # checked by CloudFront (cloudfront mode) or by the origin (hmac). Before /a/*.
  ordered_cache_behavior {
    path_pattern               = "/a/scenes/*/reference/*"
    target_origin_id           = "origin-alb"
    allowed_methods            = ["GET", "HEAD", "OPTIONS"]
    cached_methods             = ["GET", "HEAD"]
    viewer_protocol_policy     = "https-only"
    compress                   = false
    cache_policy_id            = aws_cloudfront_cache_policy.kind["reference"].id
    origin_request_policy_id   = aws_cloudfront_origin_request_policy.signed.id
    response_headers_policy_id = aws_cloudfront_response_headers_policy.security.id
    trusted_key_groups         = local.trusted_key_groups
  }

  # Other assets are public (avatars, icons, posters): no signature, no query.
  ordered_cache_behavior {
    path_pattern               = "/a/*"
    target_origin_id           = "origin-alb"
    allowed_methods            = ["GET", "HEAD", "OPTIONS"]
    cached_methods             = ["GET", "HEAD"]
    viewer_protocol_policy     = "https-only"
    compress                   = false
    cache_policy_id            = aws_cloudfront_cache_policy.kind["asset"].id
    response_headers_policy_id = aws_cloudfront_response_headers_policy.security.id
  }

  default_cache_behavior {
    target_origin_id           = "origin-alb"
    allowed_methods            = ["GET", "HEAD"]
    cached_methods             = ["GET", "HEAD"]
    viewer_protocol_policy     = "https-only"
    cache_policy_id            = aws_cloudfront_cache_policy.origin_controlled.id
    response_headers_policy_id = aws_cloudfront_response_headers_policy.security.id

    function_association {
      event_type   = "viewer-request"
      function_arn = aws_cloudfront_function.not_found.arn
    }
  }

  restrictions {
    geo_restriction {
      restriction_type = "none"
    }
  }

  viewer_certificate {
    acm_certificate_arn      = var.cdn_certificate_arn
    ssl_support_method       = "sni-only"
    minimum_protocol_version = "TLSv1.2_2021"
  }

  logging_config {
    bucket          = aws_s3_bucket.logs.bucket_domain_name
    prefix          = "cloudfront/"
    include_cookies = false
  }

  depends_on = [aws_s3_bucket_ownership_controls.logs]
}
