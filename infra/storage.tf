# The four buckets of DESIGN.md "Storage" (seed §2), plus one bucket for access logs.
#
# Keys carry no bucket prefix (videos: {sceneId}/{segmentId}/..., internal: jobs/...),
# so lifecycle rules select objects by the `type` tag every object is written with
# (core/layout.py: source, hls, thumbnail, export, internal) or by bucket. The seed's
# §9.1 filtered on videos/, exports/ and internal/ prefixes that exist in no bucket.

resource "aws_s3_bucket" "videos" {
  #checkov:skip=CKV_AWS_144:cross-region replication is a disaster-recovery choice per deployment; sources are also kept in Glacier
  #checkov:skip=CKV_AWS_145:SSE-S3 on purpose: a KMS request per object read costs more than it protects (see the encryption configuration below)
  #checkov:skip=CKV_AWS_21:keys are written once (immutable segments) and scene deletion must really delete (see aws_s3_bucket_versioning.videos)
  #checkov:skip=CKV2_AWS_62:nothing consumes S3 events: jobs are driven by the Postgres job table
  bucket = var.videos_bucket
}

resource "aws_s3_bucket" "assets" {
  #checkov:skip=CKV_AWS_144:cross-region replication is a disaster-recovery choice per deployment; versioning protects against overwrites
  #checkov:skip=CKV_AWS_145:SSE-S3 on purpose: a KMS request per object read costs more than it protects (see the encryption configuration below)
  #checkov:skip=CKV2_AWS_62:nothing consumes S3 events: jobs are driven by the Postgres job table
  bucket = var.assets_bucket
}

resource "aws_s3_bucket" "exports" {
  #checkov:skip=CKV_AWS_144:exports are regenerated on demand from the videos bucket; replicating them protects nothing
  #checkov:skip=CKV_AWS_145:SSE-S3 on purpose: a KMS request per object read costs more than it protects (see the encryption configuration below)
  #checkov:skip=CKV_AWS_21:exports are regenerable and expire after 30 days; old versions would protect nothing
  #checkov:skip=CKV2_AWS_62:nothing consumes S3 events: jobs are driven by the Postgres job table
  bucket = var.exports_bucket
}

resource "aws_s3_bucket" "internal" {
  #checkov:skip=CKV_AWS_144:uploads and job artefacts live at most 7 days; replicating them protects nothing
  #checkov:skip=CKV_AWS_145:SSE-S3 on purpose: a KMS request per object read costs more than it protects (see the encryption configuration below)
  #checkov:skip=CKV_AWS_21:uploads and job scratch expire after 7 days; old versions would protect nothing
  #checkov:skip=CKV2_AWS_62:nothing consumes S3 events: jobs are driven by the Postgres job table
  bucket = var.internal_bucket
}

locals {
  scene_buckets = {
    videos   = aws_s3_bucket.videos
    assets   = aws_s3_bucket.assets
    exports  = aws_s3_bucket.exports
    internal = aws_s3_bucket.internal
  }
}

# ---------------------------------------------------------------------------- same for all four

resource "aws_s3_bucket_public_access_block" "scene" {
  for_each                = local.scene_buckets
  bucket                  = each.value.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

# ACLs off: the bucket owner owns every object, access is by IAM policy only.
resource "aws_s3_bucket_ownership_controls" "scene" {
  for_each = local.scene_buckets
  bucket   = each.value.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

# SSE-S3, not SSE-KMS: every segment the origin reads would be a KMS request (the
# origin reads at the CDN's miss rate, thousands per second at scale); nothing in these
# buckets is more sensitive than what CloudFront serves to any signed viewer.
resource "aws_s3_bucket_server_side_encryption_configuration" "scene" {
  for_each = local.scene_buckets
  bucket   = each.value.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_logging" "scene" {
  for_each      = local.scene_buckets
  bucket        = each.value.id
  target_bucket = aws_s3_bucket.logs.id
  target_prefix = "s3/${each.key}/"
}

# ---------------------------------------------------------------------------- versioning
# Off where keys are written once or the data is regenerable; on for assets, which are
# overwritten in place (avatars, posters) and exist nowhere else.

resource "aws_s3_bucket_versioning" "videos" {
  # Segment files are immutable (a refined generation gets new keys) and scene deletion
  # must really delete; versions would only keep deleted viewers' data around.
  bucket = aws_s3_bucket.videos.id
  versioning_configuration {
    status = "Disabled"
  }
}

resource "aws_s3_bucket_versioning" "assets" {
  bucket = aws_s3_bucket.assets.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_versioning" "exports" {
  # Regenerated on demand from the videos bucket; expire after 30 days anyway.
  bucket = aws_s3_bucket.exports.id
  versioning_configuration {
    status = "Disabled"
  }
}

resource "aws_s3_bucket_versioning" "internal" {
  # Uploads and job scratch; expire after 7 days anyway.
  bucket = aws_s3_bucket.internal.id
  versioning_configuration {
    status = "Disabled"
  }
}

# ---------------------------------------------------------------------------- lifecycle
# S3 refuses AbortIncompleteMultipartUpload in a rule filtered by tag, so every bucket
# has one filter-less rule for it. The origin aborts its own failed uploads
# (origin/storage.py); this catches the ones a killed process left behind.

resource "aws_s3_bucket_lifecycle_configuration" "videos" {
  bucket = aws_s3_bucket.videos.id

  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  # Sources (source.mp4, tag type=source) are read again only to re-encode. Glacier
  # Instant Retrieval keeps them readable with a plain GetObject (no restore step), so a
  # refine job on an old clip still works, at a fraction of STANDARD's price.
  rule {
    id     = "sources-to-glacier"
    status = "Enabled"
    filter {
      tag {
        key   = "type"
        value = "source"
      }
    }
    transition {
      days          = 90
      storage_class = "GLACIER_IR"
    }
  }

  # HLS files (type=hls) and thumbnails (type=thumbnail) have no rule on purpose: they
  # stay in STANDARD for as long as their scene exists (the seed's "hls-segments" rule
  # had no action, which S3 rejects). Deleting a scene deletes them (delete_scene job).
}

resource "aws_s3_bucket_lifecycle_configuration" "assets" {
  bucket = aws_s3_bucket.assets.id

  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  # Versioning keeps an overwritten avatar or poster for 30 days, then lets it go.
  rule {
    id     = "expire-old-versions"
    status = "Enabled"
    filter {}
    noncurrent_version_expiration {
      noncurrent_days = 30
    }
  }
}

# Whole-bucket rules (not by tag) for exports and internal: everything in them is
# temporary, and an object whose tag write failed must not live forever.
resource "aws_s3_bucket_lifecycle_configuration" "exports" {
  bucket = aws_s3_bucket.exports.id

  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  rule {
    id     = "expire-exports"
    status = "Enabled"
    filter {}
    expiration {
      days = 30
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "internal" {
  bucket = aws_s3_bucket.internal.id

  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  # A queued transcode job whose upload is older than this fails with "the uploaded
  # file is missing from storage": workers must not be down for a week.
  rule {
    id     = "expire-internal"
    status = "Enabled"
    filter {}
    expiration {
      days = 7
    }
  }
}

# ---------------------------------------------------------------------------- access logs
# One sink for S3 server access logs, ALB access logs and CloudFront standard logs.

resource "aws_s3_bucket" "logs" {
  #checkov:skip=CKV_AWS_18:this is the log bucket; logging it into itself would loop
  #checkov:skip=CKV_AWS_144:access logs are not replicated; they expire after 90 days
  #checkov:skip=CKV2_AWS_62:nothing consumes S3 events of the log bucket
  #checkov:skip=CKV_AWS_21:log objects are written once by AWS services and never overwritten
  #checkov:skip=CKV_AWS_145:ALB access logging supports only SSE-S3 (AES256) on its target bucket
  bucket = var.logs_bucket
}

resource "aws_s3_bucket_public_access_block" "logs" {
  bucket                  = aws_s3_bucket.logs.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

# CloudFront standard logging writes with the awslogsdelivery account's ACL grant, so
# this one bucket keeps ACLs (owner preferred); the four data buckets enforce ownership.
resource "aws_s3_bucket_ownership_controls" "logs" {
  #checkov:skip=CKV2_AWS_65:CloudFront standard logs are delivered through a bucket ACL grant, which BucketOwnerEnforced disables
  bucket = aws_s3_bucket.logs.id
  rule {
    object_ownership = "BucketOwnerPreferred"
  }
}

# ALB access logs support only SSE-S3 on their target bucket.
resource "aws_s3_bucket_server_side_encryption_configuration" "logs" {
  bucket = aws_s3_bucket.logs.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "logs" {
  bucket = aws_s3_bucket.logs.id

  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  rule {
    id     = "expire-logs"
    status = "Enabled"
    filter {}
    expiration {
      days = 90
    }
  }
}

data "aws_elb_service_account" "current" {}

data "aws_iam_policy_document" "logs_bucket" {
  # ALB access logs: the regional ELB account writes them in regions older than
  # August 2022, the log delivery service in newer ones.
  statement {
    sid       = "AlbAccessLogs"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.logs.arn}/alb/*"]
    principals {
      type        = "AWS"
      identifiers = [data.aws_elb_service_account.current.arn]
    }
  }

  statement {
    sid       = "AlbAccessLogsDelivery"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.logs.arn}/alb/*"]
    principals {
      type        = "Service"
      identifiers = ["logdelivery.elasticloadbalancing.amazonaws.com"]
    }
  }

  # S3 server access logs of the four buckets.
  statement {
    sid       = "S3ServerAccessLogs"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.logs.arn}/s3/*"]
    principals {
      type        = "Service"
      identifiers = ["logging.s3.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }

  statement {
    sid       = "TlsOnly"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.logs.arn, "${aws_s3_bucket.logs.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "logs" {
  bucket = aws_s3_bucket.logs.id
  policy = data.aws_iam_policy_document.logs_bucket.json
}

# TLS only on the four data buckets too (the tasks always use HTTPS).
data "aws_iam_policy_document" "scene_bucket" {
  for_each = local.scene_buckets

  statement {
    sid       = "TlsOnly"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [each.value.arn, "${each.value.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "scene" {
  for_each = local.scene_buckets
  bucket   = each.value.id
  policy   = data.aws_iam_policy_document.scene_bucket[each.key].json
}
