output "cdn_base_url" {
  description = "CDN_BASE_URL of the origin: URLs it emits are absolute on it."
  value       = local.cdn_base_url
}

output "cloudfront_domain_name" {
  description = "Point the cdn_aliases at this name (CNAME or Route 53 alias)."
  value       = aws_cloudfront_distribution.cdn.domain_name
}

output "cloudfront_distribution_id" {
  description = "Distribution id (invalidations, logs)."
  value       = aws_cloudfront_distribution.cdn.id
}

output "cloudfront_key_pair_id" {
  description = "CLOUDFRONT_KEY_PAIR_ID of the origin (signing_mode = cloudfront)."
  value       = one(aws_cloudfront_public_key.signing[*].id)
}

output "alb_dns_name" {
  description = "Point origin_domain_name at this name unless route53_zone_id was given."
  value       = aws_lb.origin.dns_name
}

output "buckets" {
  description = "The four buckets by role (VIDEOS_BUCKET, ASSETS_BUCKET, EXPORTS_BUCKET, INTERNAL_BUCKET)."
  value       = { for role, b in local.scene_buckets : role => b.bucket }
}

output "logs_bucket" {
  description = "Access logs: cloudfront/, alb/, s3/<bucket role>/."
  value       = aws_s3_bucket.logs.bucket
}

output "ecs_cluster" {
  description = "ECS cluster of the origin and worker services."
  value       = aws_ecs_cluster.main.name
}

output "task_definitions" {
  description = "Task definition ARNs by command."
  value = {
    serve   = aws_ecs_task_definition.origin.arn
    worker  = aws_ecs_task_definition.worker.arn
    migrate = aws_ecs_task_definition.migrate.arn
  }
}

output "migrate_command" {
  description = "Runs `storyforge migrate` once; wait for exit code 0 before rolling out new origins."
  value = join(" ", [
    "aws ecs run-task",
    "--region ${var.region}",
    "--cluster ${aws_ecs_cluster.main.name}",
    "--launch-type FARGATE",
    "--task-definition ${aws_ecs_task_definition.migrate.arn}",
    "--network-configuration 'awsvpcConfiguration={subnets=[${join(",", var.private_subnet_ids)}],securityGroups=[${aws_security_group.worker.id}],assignPublicIp=DISABLED}'",
  ])
}

output "log_groups" {
  description = "CloudWatch log groups by service."
  value       = { for k, g in aws_cloudwatch_log_group.service : k => g.name }
}

output "database_endpoint" {
  description = "RDS endpoint (host:port); the DSN is in the DATABASE_URL secret."
  value       = aws_db_instance.main.endpoint
}

output "secrets" {
  description = "Secrets Manager ARNs; API_TOKENS is shared with the StoryForge app."
  value = {
    DATABASE_URL  = aws_secretsmanager_secret.database_url.arn
    ORIGIN_SECRET = aws_secretsmanager_secret.origin_secret.arn
    API_TOKENS    = aws_secretsmanager_secret.api_tokens.arn
    HMAC_KEYS     = one(aws_secretsmanager_secret.hmac_keys[*].arn)
  }
}

output "metrics_namespace" {
  description = "CloudWatch namespace of the storyforge_jobs gauge (queued jobs by kind)."
  value       = local.metrics_namespace
}
