# ---------------------------------------------------------------------------- general

variable "region" {
  description = "AWS region of everything but CloudFront (which is global)."
  type        = string
  default     = "us-east-1"
}

variable "environment" {
  description = "Environment name, used in resource names and tags."
  type        = string
  default     = "production"
}

variable "name" {
  description = "Prefix of resource names (cluster, services, roles, secrets)."
  type        = string
  default     = "storyforge"
}

variable "image" {
  description = "The StoryForge container image (Dockerfile at the repository root), e.g. 123456789012.dkr.ecr.us-east-1.amazonaws.com/storyforge-origin:1.4.2. Every service and the migrate task run it."
  type        = string
}

# ---------------------------------------------------------------------------- buckets
# Defaults are the origin's own defaults (core/settings.py); bucket names are global,
# so a real deployment sets its own. The task definitions pass them as VIDEOS_BUCKET etc.

variable "videos_bucket" {
  description = "HLS segments, per-clip playlists, thumbnails, storyboards, sources."
  type        = string
  default     = "storyforge-videos"
}

variable "assets_bucket" {
  description = "Avatars, topic icons, scene posters and references."
  type        = string
  default     = "storyforge-assets"
}

variable "exports_bucket" {
  description = "Compiled scene MP4s (regenerable, expire after 30 days)."
  type        = string
  default     = "storyforge-exports"
}

variable "internal_bucket" {
  description = "Uploads and job artefacts (expire after 7 days)."
  type        = string
  default     = "storyforge-internal"
}

variable "logs_bucket" {
  description = "Access logs of CloudFront, the ALB and the four buckets."
  type        = string
  default     = "storyforge-logs"
}

# ---------------------------------------------------------------------------- network

variable "vpc_id" {
  description = "VPC of the ALB, the tasks and the database."
  type        = string
}

variable "public_subnet_ids" {
  description = "Subnets of the internet-facing ALB (two or more AZs)."
  type        = list(string)
}

variable "private_subnet_ids" {
  description = "Subnets of the tasks and the database (two or more AZs), with a route to S3, Secrets Manager, CloudWatch and the image registry (NAT gateway or VPC endpoints)."
  type        = list(string)
}

variable "api_allowed_cidrs" {
  description = "Networks allowed to call the JSON API (/api/) on the ALB directly, e.g. the StoryForge app's egress addresses. Media requests come only through CloudFront."
  type        = list(string)
  default     = []
}

# ---------------------------------------------------------------------------- names and TLS

variable "origin_domain_name" {
  description = "DNS name of the ALB that CloudFront connects to over TLS (origin.storyforge.io); origin_certificate_arn must cover it."
  type        = string
}

variable "origin_certificate_arn" {
  description = "ACM certificate (in var.region) for origin_domain_name, served by the ALB."
  type        = string
}

variable "route53_zone_id" {
  description = "When set, an alias record origin_domain_name -> ALB is created in this hosted zone; otherwise point the name at the output alb_dns_name yourself."
  type        = string
  default     = ""
}

variable "cdn_aliases" {
  description = "Viewer-facing names of the distribution; the first one becomes CDN_BASE_URL."
  type        = list(string)

  validation {
    condition     = length(var.cdn_aliases) > 0
    error_message = "Give at least one CDN name (e.g. cdn.storyforge.io): signed URLs and CDN_BASE_URL are built on it."
  }
}

variable "cdn_certificate_arn" {
  description = "ACM certificate in us-east-1 covering cdn_aliases (CloudFront requires us-east-1)."
  type        = string
}

variable "price_class" {
  description = "CloudFront price class."
  type        = string
  default     = "PriceClass_All"
}

variable "web_acl_id" {
  description = "Optional WAFv2 web ACL ARN (scope CLOUDFRONT) to attach to the distribution."
  type        = string
  default     = null
}

# ---------------------------------------------------------------------------- signing

variable "signing_mode" {
  description = "SIGNING of the origin: none, cloudfront (CloudFront verifies RSA-signed policies; media is cached once for everyone) or hmac (the origin verifies tokens; every viewer's token is its own cache key)."
  type        = string
  default     = "cloudfront"

  validation {
    condition     = contains(["none", "cloudfront", "hmac"], var.signing_mode)
    error_message = "signing_mode must be none, cloudfront or hmac."
  }
}

variable "signed_url_ttl" {
  description = "SIGNED_URL_TTL: lifetime in seconds of minted signed URLs, tokens and cookies."
  type        = number
  default     = 21600
}

variable "cloudfront_public_key_pem" {
  description = "PEM of the RSA public key CloudFront verifies signed URLs with (signing_mode = cloudfront). Its private half never passes through terraform: see cloudfront_private_key_secret_arn."
  type        = string
  default     = ""
}

variable "cloudfront_private_key_secret_arn" {
  description = "Secrets Manager secret holding the matching RSA private key PEM (signing_mode = cloudfront); becomes CLOUDFRONT_PRIVATE_KEY of the origin. Create it outside terraform so the key is never in state."
  type        = string
  default     = ""
}

variable "origin_secret_header" {
  description = "ORIGIN_SECRET_HEADER: the custom header CloudFront adds to every origin request; the origin (and the ALB) refuse media requests without it."
  type        = string
  default     = "X-Origin-Secret"
}

# ---------------------------------------------------------------------------- origin service

variable "origin_cpu" {
  description = "CPU units of one origin task (1024 = 1 vCPU). One `storyforge serve` process per task."
  type        = number
  default     = 1024
}

variable "origin_memory" {
  description = "Memory (MiB) of one origin task."
  type        = number
  default     = 2048
}

variable "origin_min_tasks" {
  description = "Fewest origin tasks (two or more keeps one per AZ)."
  type        = number
  default     = 2
}

variable "origin_max_tasks" {
  description = "Most origin tasks."
  type        = number
  default     = 20
}

variable "origin_cpu_target" {
  description = "Average CPU utilisation (%) the origin service is scaled to keep."
  type        = number
  default     = 60
}

variable "origin_db_pool_size" {
  description = "DB_POOL_SIZE: Postgres connections per origin process. origin_max_tasks * this + workers must stay under the instance's max_connections."
  type        = number
  default     = 10
}

variable "origin_environment" {
  description = "Extra environment of the origin container (CORS_ORIGINS, ACCESS_LOG, MAX_UPLOAD_BYTES, ... see README \"Configuration\")."
  type        = map(string)
  default     = {}
}

# ---------------------------------------------------------------------------- workers

variable "worker_cpu" {
  description = "CPU units of one worker task; ffmpeg uses every core it gets."
  type        = number
  default     = 4096
}

variable "worker_memory" {
  description = "Memory (MiB) of one worker task."
  type        = number
  default     = 8192
}

variable "worker_ephemeral_storage_gib" {
  description = "Scratch disk of one worker task (source, renditions and frames of each running job)."
  type        = number
  default     = 100
}

variable "worker_concurrency" {
  description = "`storyforge worker --concurrency`: jobs one worker task runs at once."
  type        = number
  default     = 2
}

variable "worker_grace_seconds" {
  description = "`storyforge worker --grace`: seconds running jobs get to finish on SIGTERM before they are handed back. Kept below the container's stopTimeout (120 s, the Fargate maximum)."
  type        = number
  default     = 110

  validation {
    condition     = var.worker_grace_seconds < 120
    error_message = "worker_grace_seconds must stay below 120 (Fargate stops the container 120 s after SIGTERM)."
  }
}

variable "worker_min_tasks" {
  description = "Fewest worker tasks."
  type        = number
  default     = 1
}

variable "worker_max_tasks" {
  description = "Most worker tasks."
  type        = number
  default     = 20
}

variable "worker_scale_out_queued" {
  description = "Scale workers out while at least this many jobs wait (status queued) for two minutes."
  type        = number
  default     = 1
}

variable "worker_scale_in_cpu" {
  description = "Scale workers in while their average CPU stays below this (%) for 15 minutes (idle workers)."
  type        = number
  default     = 10
}

variable "cloudwatch_agent_image" {
  description = "CloudWatch agent image of the origin's metrics sidecar (scrapes /metrics, publishes the job gauge). Pin a release tag in production."
  type        = string
  default     = "public.ecr.aws/cloudwatch-agent/cloudwatch-agent:latest"
}

# ---------------------------------------------------------------------------- database

variable "db_instance_class" {
  description = "RDS instance class."
  type        = string
  default     = "db.t4g.medium"
}

variable "db_engine_version" {
  description = "PostgreSQL major version (15 or later)."
  type        = string
  default     = "16"
}

variable "db_allocated_storage" {
  description = "Initial storage (GiB); grows automatically up to db_max_allocated_storage."
  type        = number
  default     = 50
}

variable "db_max_allocated_storage" {
  description = "Storage autoscaling ceiling (GiB)."
  type        = number
  default     = 500
}

variable "db_multi_az" {
  description = "Standby in a second AZ with automatic failover."
  type        = bool
  default     = true
}

variable "db_backup_retention_days" {
  description = "Automated backup retention (days)."
  type        = number
  default     = 14
}

variable "deletion_protection" {
  description = "Protect the database and the ALB from deletion (turn off only to tear an environment down)."
  type        = bool
  default     = true
}

# ---------------------------------------------------------------------------- logs

variable "log_retention_days" {
  description = "Retention of the services' CloudWatch log groups."
  type        = number
  default     = 365
}
