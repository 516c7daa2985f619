# Secrets Manager holds every secret the tasks read (ECS injects them as environment
# variables at start); one customer-managed KMS key encrypts them, the log groups and
# the database. Generated secrets live in the terraform state too: keep the state in an
# encrypted backend with restricted access.

data "aws_iam_policy_document" "kms" {
  #checkov:skip=CKV_AWS_109:a key policy's Resource "*" means this key only; the account statement is AWS's default key policy
  #checkov:skip=CKV_AWS_111:a key policy's Resource "*" means this key only; the account statement is AWS's default key policy
  #checkov:skip=CKV_AWS_356:a key policy's Resource "*" means this key only; the account statement is AWS's default key policy
  # The account administers the key through IAM (the AWS default key policy).
  statement {
    sid       = "AccountAdministersThroughIam"
    actions   = ["kms:*"]
    resources = ["*"] # in a key policy "*" means this key
    principals {
      type        = "AWS"
      identifiers = ["arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }

  # CloudWatch Logs encrypts our log groups with it (and nothing else).
  statement {
    sid       = "CloudWatchLogsForOurGroups"
    actions   = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${var.region}.amazonaws.com"]
    }
    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${data.aws_partition.current.partition}:logs:${var.region}:${data.aws_caller_identity.current.account_id}:log-group:/${var.name}/*"]
    }
  }
}

resource "aws_kms_key" "main" {
  description             = "${var.name}-${var.environment}: secrets, logs, database"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms.json
}

resource "aws_kms_alias" "main" {
  name          = "alias/${var.name}-${var.environment}"
  target_key_id = aws_kms_key.main.key_id
}

# ---------------------------------------------------------------------------- generated secrets
# Letters and digits only: they go into a URL (DATABASE_URL), an HTTP header
# (ORIGIN_SECRET, also matched by an ALB rule, where * and ? are wildcards) and
# comma/colon-separated lists (API_TOKENS, HMAC_KEYS).

resource "random_password" "db" {
  length  = 40
  special = false
}

resource "random_password" "origin_secret" {
  length  = 48
  special = false
}

resource "random_password" "api_token" {
  length  = 48
  special = false
}

resource "random_password" "hmac_key" {
  count   = var.signing_mode == "hmac" ? 1 : 0
  length  = 48
  special = false
}

locals {
  database_url = "postgresql://${aws_db_instance.main.username}:${random_password.db.result}@${aws_db_instance.main.address}:${aws_db_instance.main.port}/${aws_db_instance.main.db_name}?sslmode=require"
}

# Rotation (checkov CKV2_AWS_57) is a procedure, not a Lambda: each of these must change
# in two places in step (database and DSN, CloudFront header and origin, app and origin),
# which docs/DEPLOY.md "Rotating secrets" describes.

resource "aws_secretsmanager_secret" "database_url" {
  #checkov:skip=CKV2_AWS_57:rotated by the documented two-step procedure (docs/DEPLOY.md), not by a rotation Lambda
  name        = "${var.name}/${var.environment}/DATABASE_URL"
  description = "DSN of the StoryForge database (origin, workers, migrate)"
  kms_key_id  = aws_kms_key.main.arn
}

resource "aws_secretsmanager_secret_version" "database_url" {
  secret_id     = aws_secretsmanager_secret.database_url.id
  secret_string = local.database_url
}

resource "aws_secretsmanager_secret" "origin_secret" {
  #checkov:skip=CKV2_AWS_57:rotated by the documented two-step procedure (docs/DEPLOY.md), not by a rotation Lambda
  name        = "${var.name}/${var.environment}/ORIGIN_SECRET"
  description = "Value of the custom header CloudFront sends to the origin"
  kms_key_id  = aws_kms_key.main.arn
}

resource "aws_secretsmanager_secret_version" "origin_secret" {
  secret_id     = aws_secretsmanager_secret.origin_secret.id
  secret_string = random_password.origin_secret.result
}

resource "aws_secretsmanager_secret" "api_tokens" {
  #checkov:skip=CKV2_AWS_57:rotated by the documented two-step procedure (docs/DEPLOY.md), not by a rotation Lambda
  name        = "${var.name}/${var.environment}/API_TOKENS"
  description = "Bearer tokens the JSON API accepts (comma-separated); the StoryForge app reads the same secret"
  kms_key_id  = aws_kms_key.main.arn
}

resource "aws_secretsmanager_secret_version" "api_tokens" {
  secret_id     = aws_secretsmanager_secret.api_tokens.id
  secret_string = random_password.api_token.result
}

resource "aws_secretsmanager_secret" "hmac_keys" {
  #checkov:skip=CKV2_AWS_57:rotated by the documented two-step procedure (docs/DEPLOY.md), not by a rotation Lambda
  count       = var.signing_mode == "hmac" ? 1 : 0
  name        = "${var.name}/${var.environment}/HMAC_KEYS"
  description = "kid:secret list the origin signs and verifies HMAC tokens with"
  kms_key_id  = aws_kms_key.main.arn
}

resource "aws_secretsmanager_secret_version" "hmac_keys" {
  count         = var.signing_mode == "hmac" ? 1 : 0
  secret_id     = aws_secretsmanager_secret.hmac_keys[0].id
  secret_string = "k1:${random_password.hmac_key[0].result}"
}
