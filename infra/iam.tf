# Least privilege, derived from the S3 and CloudFront calls the Python code makes
# (origin/storage.py through aiobotocore); tests/integration/test_infra.py re-derives
# the list from the code and checks every action is granted here.
#
#   API call (origin/storage.py)                      IAM action
#   HeadObject, GetObject                             s3:GetObject
#   GetObjectTagging                                  s3:GetObjectTagging
#   PutObject, CreateMultipartUpload, UploadPart,     s3:PutObject (+ s3:PutObjectTagging:
#   CompleteMultipartUpload, CopyObject,                every object is written with its
#   UploadPartCopy                                      `type` tag)
#   AbortMultipartUpload                              s3:AbortMultipartUpload
#   DeleteObject, DeleteObjects                       s3:DeleteObject
#   ListObjectsV2, HeadBucket                         s3:ListBucket
#   CreateBucket, ListBuckets                         not granted: terraform creates the
#                                                     buckets, and the code calls these only
#                                                     when HeadBucket says a bucket is missing
#   CreateInvalidation (core/cdn.py, run by the     cloudfront:CreateInvalidation, workers only
#   jobs that publish, remove clips, delete scenes)

locals {
  scene_bucket_arns = [for b in local.scene_buckets : b.arn]
}

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
    # only ECS in this account may assume it (confused deputy)
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

# ---------------------------------------------------------------------------- execution role
# Used by ECS itself (not the app): pull the image, write container logs, read the
# secrets it injects as environment variables.

resource "aws_iam_role" "execution" {
  name               = "${local.prefix}-ecs-execution"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

resource "aws_iam_role_policy_attachment" "execution" {
  role       = aws_iam_role.execution.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

data "aws_iam_policy_document" "execution" {
  statement {
    sid     = "InjectSecrets"
    actions = ["secretsmanager:GetSecretValue"]
    resources = concat(
      [
        aws_secretsmanager_secret.database_url.arn,
        aws_secretsmanager_secret.origin_secret.arn,
        aws_secretsmanager_secret.api_tokens.arn,
      ],
      aws_secretsmanager_secret.hmac_keys[*].arn,
      var.signing_mode == "cloudfront" ? [var.cloudfront_private_key_secret_arn] : [],
    )
  }
  statement {
    sid       = "DecryptSecrets"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.main.arn]
  }
}

resource "aws_iam_role_policy" "execution" {
  name   = "secrets"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

# ---------------------------------------------------------------------------- origin task role
# Reads media of the videos, assets and exports buckets; writes uploads (and removes
# rejected ones) under internal/jobs/, the assets the API writes (avatars, topic
# icons, scene references: origin/assets/service.py) and the thumbnails it grabs at a moment
# under videos/{scene}/{segment}/stills/ (origin/playback/stills.py). Never writes or deletes
# published media.

data "aws_iam_policy_document" "origin_task" {
  statement {
    sid       = "ReadMedia"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.videos.arn}/*", "${aws_s3_bucket.assets.arn}/*", "${aws_s3_bucket.exports.arn}/*"]
  }

  # HeadBucket at start-up and in /readyz (all four); ListObjectsV2 when a rejected
  # upload is removed (internal).
  statement {
    sid       = "ListBuckets"
    actions   = ["s3:ListBucket"]
    resources = local.scene_bucket_arns
  }

  # put() reads its object back (HeadObject); a rejected upload is deleted again.
  statement {
    sid       = "WriteUploads"
    actions   = ["s3:PutObject", "s3:PutObjectTagging", "s3:GetObject", "s3:AbortMultipartUpload", "s3:DeleteObject"]
    resources = ["${aws_s3_bucket.internal.arn}/jobs/*"]
  }

  # PUT/DELETE /api/v1/users/{id}/avatar, topics/{id}/icon, scenes/{id}/references/{name}:
  # re-encoded in the origin, written with one PutObject (then HeadObject), or deleted.
  statement {
    sid     = "WriteApiAssets"
    actions = ["s3:PutObject", "s3:PutObjectTagging", "s3:DeleteObject"]
    resources = [
      "${aws_s3_bucket.assets.arn}/avatars/*",
      "${aws_s3_bucket.assets.arn}/topics/*",
      "${aws_s3_bucket.assets.arn}/scenes/*/reference/*",
    ]
  }

  # Thumbnails at a moment, kept for every origin process (put() reads them back).
  statement {
    sid       = "WriteStills"
    actions   = ["s3:PutObject", "s3:PutObjectTagging"]
    resources = ["${aws_s3_bucket.videos.arn}/*/*/stills/*"]
  }

  # The metrics sidecar writes the job gauge as embedded-metric-format log events.
  statement {
    sid       = "PublishJobGauge"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    resources = ["${aws_cloudwatch_log_group.service["metrics"].arn}:*"]
  }
}

resource "aws_iam_role" "origin" {
  name               = "${local.prefix}-origin"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

resource "aws_iam_role_policy" "origin" {
  name   = "origin"
  role   = aws_iam_role.origin.id
  policy = data.aws_iam_policy_document.origin_task.json
}

# ---------------------------------------------------------------------------- worker task role
# Transcode reads the upload from internal and writes the segment's files to videos and
# the poster to assets; export writes exports; delete_scene / remove_segment delete
# from videos, assets and exports and invalidate the CDN. Workers are the only role
# that deletes published media, so they alone may invalidate.

data "aws_iam_policy_document" "worker_task" {
  statement {
    sid = "ReadWriteMedia"
    actions = [
      "s3:GetObject",
      "s3:GetObjectTagging",
      "s3:PutObject",
      "s3:PutObjectTagging",
      "s3:AbortMultipartUpload",
      "s3:DeleteObject",
    ]
    resources = [
      "${aws_s3_bucket.videos.arn}/*",
      "${aws_s3_bucket.assets.arn}/*",
      "${aws_s3_bucket.exports.arn}/*",
      "${aws_s3_bucket.internal.arn}/jobs/*",
    ]
  }

  # ListObjectsV2 (delete_prefix, cleaning a retried job's prefix, deleting scenes).
  statement {
    sid       = "ListBuckets"
    actions   = ["s3:ListBucket"]
    resources = local.scene_bucket_arns
  }

  statement {
    sid       = "InvalidateDeletedMedia"
    actions   = ["cloudfront:CreateInvalidation"]
    resources = [aws_cloudfront_distribution.cdn.arn]
  }
}

resource "aws_iam_role" "worker" {
  name               = "${local.prefix}-worker"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

resource "aws_iam_role_policy" "worker" {
  name   = "worker"
  role   = aws_iam_role.worker.id
  policy = data.aws_iam_policy_document.worker_task.json
}

# ---------------------------------------------------------------------------- RDS enhanced monitoring

data "aws_iam_policy_document" "rds_monitoring_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["monitoring.rds.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "rds_monitoring" {
  name               = "${local.prefix}-rds-monitoring"
  assume_role_policy = data.aws_iam_policy_document.rds_monitoring_assume.json
}

resource "aws_iam_role_policy_attachment" "rds_monitoring" {
  role       = aws_iam_role.rds_monitoring.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}
