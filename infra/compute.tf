# Compute on ECS Fargate, all from the one image (var.image):
#
#   origin   `storyforge serve`   behind the ALB, scaled on CPU
#   worker   `storyforge worker`  no ingress, scaled on the job queue
#   migrate  `storyforge migrate` a task definition only: run once per release, before
#                                 new origins start (docs/DEPLOY.md "Releasing")
#
# plus RDS PostgreSQL. Tasks run in private subnets without public addresses.

locals {
  prefix    = "${var.name}-${var.environment}"
  log_group = "/${var.name}/${var.environment}"
  port      = 8080

  # The command of each task definition. tests/integration/test_container.py parses
  # each with the real `storyforge` argument parser.
  service_commands = {
    origin  = ["serve"]
    worker  = ["worker", "--concurrency", tostring(var.worker_concurrency), "--grace", tostring(var.worker_grace_seconds)]
    migrate = ["migrate"]
  }

  # Job kinds the workers handle (workers/runtime/main.py handlers()); their queued counts drive
  # worker scale-out. A kind no worker handles stays queued forever and must not keep
  # the service at its maximum, so this is not "every kind in the jobs table".
  # `refine` too: a backlog of refinements (issue 17) is worth workers, bytes cost more.
  worker_job_kinds = ["transcode", "delete_scene", "remove_segment", "webhook", "expire_upload", "export", "refine"]

  bucket_environment = {
    STORAGE         = "s3"
    S3_REGION       = var.region
    VIDEOS_BUCKET   = aws_s3_bucket.videos.bucket
    ASSETS_BUCKET   = aws_s3_bucket.assets.bucket
    EXPORTS_BUCKET  = aws_s3_bucket.exports.bucket
    INTERNAL_BUCKET = aws_s3_bucket.internal.bucket
  }

  origin_environment = merge(local.bucket_environment, {
    HOST                 = "0.0.0.0"
    PORT                 = tostring(local.port)
    LOG_FORMAT           = "json"
    TMPDIR               = "/tmp"
    CDN_BASE_URL         = local.cdn_base_url
    SIGNING              = var.signing_mode
    SIGNED_URL_TTL       = tostring(var.signed_url_ttl)
    ORIGIN_SECRET_HEADER = var.origin_secret_header
    DB_POOL_SIZE         = tostring(var.origin_db_pool_size)
    # The origin sees the ALB's address, not the viewer's, so tokens cannot be bound
    # to viewer addresses behind this stack.
    HMAC_BIND_IP       = "false"
    CLOUDFRONT_BIND_IP = "false"
    }, var.signing_mode == "cloudfront" ? {
    CLOUDFRONT_KEY_PAIR_ID = aws_cloudfront_public_key.signing[0].id
  } : {}, var.origin_environment)

  origin_secrets = merge({
    DATABASE_URL  = aws_secretsmanager_secret.database_url.arn
    ORIGIN_SECRET = aws_secretsmanager_secret.origin_secret.arn
    API_TOKENS    = aws_secretsmanager_secret.api_tokens.arn
    }, var.signing_mode == "hmac" ? {
    HMAC_KEYS = aws_secretsmanager_secret.hmac_keys[0].arn
    } : {}, var.signing_mode == "cloudfront" ? {
    CLOUDFRONT_PRIVATE_KEY = var.cloudfront_private_key_secret_arn
  } : {})

  # Workers mint no URLs: they run with SIGNING=none and never see a signing key.
  # They invalidate the distribution after publishing, removing and deleting; with
  # signing on, the CDN keys scene documents by the signed query (cdn.tf), so their
  # invalidation paths must cover every query variant.
  worker_environment = merge(local.bucket_environment, {
    LOG_FORMAT          = "json"
    TMPDIR              = "/tmp"
    SIGNING             = "none"
    CDN_DISTRIBUTION_ID = aws_cloudfront_distribution.cdn.id
    CDN_QUERY_VARIANTS  = var.signing_mode == "none" ? "false" : "true"
  })

  worker_secrets = {
    DATABASE_URL = aws_secretsmanager_secret.database_url.arn
  }

  migrate_environment = { LOG_FORMAT = "json" }
  migrate_secrets     = { DATABASE_URL = aws_secretsmanager_secret.database_url.arn }

  # Shared by every StoryForge container: read-only root, scratch on /tmp (task
  # storage), an init process that reaps ffmpeg children and forwards SIGTERM.
  container_base = {
    image                  = var.image
    essential              = true
    readonlyRootFilesystem = true
    user                   = "10001:10001"
    linuxParameters        = { initProcessEnabled = true }
    mountPoints            = [{ sourceVolume = "tmp", containerPath = "/tmp", readOnly = false }]
  }
}

# ---------------------------------------------------------------------------- logs

resource "aws_cloudwatch_log_group" "service" {
  for_each          = toset(["origin", "worker", "migrate", "metrics"])
  name              = "${local.log_group}/${each.key}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

# ---------------------------------------------------------------------------- security groups

data "aws_ec2_managed_prefix_list" "cloudfront" {
  name = "com.amazonaws.global.cloudfront.origin-facing"
}

resource "aws_security_group" "alb" {
  name        = "${local.prefix}-alb"
  description = "StoryForge ALB: HTTPS from CloudFront only"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "alb_from_cloudfront" {
  security_group_id = aws_security_group.alb.id
  description       = "HTTPS from CloudFront origin-facing addresses"
  prefix_list_id    = data.aws_ec2_managed_prefix_list.cloudfront.id
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

# The CloudFront prefix list counts as ~55 rules against the group's quota, so the API
# callers get a group of their own.
resource "aws_security_group" "alb_api" {
  count       = length(var.api_allowed_cidrs) > 0 ? 1 : 0
  name        = "${local.prefix}-alb-api"
  description = "StoryForge ALB: HTTPS from the API callers"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "alb_from_api_callers" {
  for_each          = length(var.api_allowed_cidrs) > 0 ? toset(var.api_allowed_cidrs) : toset([])
  security_group_id = aws_security_group.alb_api[0].id
  description       = "HTTPS from an API caller"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_vpc_security_group_egress_rule" "alb_to_origin" {
  security_group_id            = aws_security_group.alb.id
  description                  = "HTTP to origin tasks"
  referenced_security_group_id = aws_security_group.origin.id
  ip_protocol                  = "tcp"
  from_port                    = local.port
  to_port                      = local.port
}

resource "aws_security_group" "origin" {
  name        = "${local.prefix}-origin"
  description = "StoryForge origin tasks"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "origin_from_alb" {
  security_group_id            = aws_security_group.origin.id
  description                  = "HTTP from the ALB"
  referenced_security_group_id = aws_security_group.alb.id
  ip_protocol                  = "tcp"
  from_port                    = local.port
  to_port                      = local.port
}

# Workers and the migrate task: no ingress at all.
resource "aws_security_group" "worker" {
  name        = "${local.prefix}-worker"
  description = "StoryForge workers and migrate task: no ingress"
  vpc_id      = var.vpc_id
}

# Tasks reach S3, Secrets Manager, CloudWatch and the registry over HTTPS (NAT or VPC
# endpoints), and the database.
resource "aws_vpc_security_group_egress_rule" "task_https" {
  for_each          = { origin = aws_security_group.origin.id, worker = aws_security_group.worker.id }
  security_group_id = each.value
  description       = "HTTPS to AWS APIs and the image registry"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_vpc_security_group_egress_rule" "task_db" {
  for_each                     = { origin = aws_security_group.origin.id, worker = aws_security_group.worker.id }
  security_group_id            = each.value
  description                  = "PostgreSQL"
  referenced_security_group_id = aws_security_group.db.id
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
}

resource "aws_security_group" "db" {
  name        = "${local.prefix}-db"
  description = "StoryForge PostgreSQL: from origin and worker tasks only"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "db_from_tasks" {
  for_each                     = { origin = aws_security_group.origin.id, worker = aws_security_group.worker.id }
  security_group_id            = aws_security_group.db.id
  description                  = "PostgreSQL from ${each.key} tasks"
  referenced_security_group_id = each.value
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
}

# ---------------------------------------------------------------------------- load balancer

resource "aws_lb" "origin" {
  #checkov:skip=CKV2_AWS_28:WAF is optional and attached at CloudFront (var.web_acl_id); the ALB accepts only CloudFront and the API callers
  name                       = local.prefix
  load_balancer_type         = "application"
  internal                   = false
  subnets                    = var.public_subnet_ids
  security_groups            = concat([aws_security_group.alb.id], aws_security_group.alb_api[*].id)
  drop_invalid_header_fields = true
  enable_deletion_protection = var.deletion_protection
  # Below the origin's keep-alive timeout (75 s), so the ALB never reuses a connection
  # the origin is closing (which would be a 502).
  idle_timeout = 60

  access_logs {
    bucket  = aws_s3_bucket.logs.id
    prefix  = "alb"
    enabled = true
  }

  depends_on = [aws_s3_bucket_policy.logs]
}

resource "aws_lb_target_group" "origin" {
  #checkov:skip=CKV_AWS_378:TLS ends at the ALB; the origin serves plain HTTP inside the VPC (only the ALB's group may connect)
  name                 = "${local.prefix}-origin"
  vpc_id               = var.vpc_id
  target_type          = "ip"
  port                 = local.port
  protocol             = "HTTP"
  deregistration_delay = 30

  # Readiness, not liveness: a task whose database or storage is unreachable stops
  # getting traffic; ECS restarts tasks that fail /healthz (container health check).
  health_check {
    path                = "/readyz"
    matcher             = "200"
    interval            = 15
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }
}

resource "aws_lb_listener" "https" {
  load_balancer_arn = aws_lb.origin.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = var.origin_certificate_arn

  # Anything no rule below admits.
  default_action {
    type = "fixed-response"
    fixed_response {
      content_type = "application/json"
      status_code  = "403"
      message_body = "{\"error\": {\"code\": \"forbidden\", \"message\": \"not through the CDN\"}}"
    }
  }
}

# Probes and metrics stay inside the VPC (the ALB health check and the metrics sidecar
# reach the tasks directly, not through this listener).
resource "aws_lb_listener_rule" "hide_probes" {
  listener_arn = aws_lb_listener.https.arn
  priority     = 10
  action {
    type = "fixed-response"
    fixed_response {
      content_type = "application/json"
      status_code  = "404"
      message_body = "{\"error\": {\"code\": \"not_found\", \"message\": \"not served here\"}}"
    }
  }
  condition {
    path_pattern {
      values = ["/metrics", "/readyz", "/healthz"]
    }
  }
}

# Requests that came through CloudFront carry the origin secret.
resource "aws_lb_listener_rule" "from_cdn" {
  listener_arn = aws_lb_listener.https.arn
  priority     = 20
  action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.origin.arn
  }
  condition {
    http_header {
      http_header_name = var.origin_secret_header
      values           = [random_password.origin_secret.result]
    }
  }
}

# The JSON API, for the StoryForge app (bearer tokens, API_TOKENS).
resource "aws_lb_listener_rule" "api" {
  count        = length(var.api_allowed_cidrs) > 0 ? 1 : 0
  listener_arn = aws_lb_listener.https.arn
  priority     = 30
  action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.origin.arn
  }
  condition {
    path_pattern {
      values = ["/api/*"]
    }
  }
  condition {
    source_ip {
      values = var.api_allowed_cidrs
    }
  }
}

resource "aws_route53_record" "origin" {
  count   = var.route53_zone_id != "" ? 1 : 0
  zone_id = var.route53_zone_id
  name    = var.origin_domain_name
  type    = "A"
  alias {
    name                   = aws_lb.origin.dns_name
    zone_id                = aws_lb.origin.zone_id
    evaluate_target_health = false
  }
}

# ---------------------------------------------------------------------------- ECS

resource "aws_ecs_cluster" "main" {
  name = local.prefix
  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

resource "aws_ecs_task_definition" "origin" {
  family                   = "${local.prefix}-origin"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.origin_cpu
  memory                   = var.origin_memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.origin.arn

  volume {
    name = "tmp"
  }

  container_definitions = jsonencode([
    merge(local.container_base, {
      name         = "origin"
      command      = local.service_commands.origin
      portMappings = [{ containerPort = local.port, protocol = "tcp" }]
      environment  = [for k, v in local.origin_environment : { name = k, value = v }]
      secrets      = [for k, v in local.origin_secrets : { name = k, valueFrom = v }]
      # Liveness: the same check as the image's HEALTHCHECK (ECS ignores that one).
      healthCheck = {
        command     = ["CMD", "storyforge-healthcheck"]
        interval    = 15
        timeout     = 5
        retries     = 3
        startPeriod = 30
      }
      # `serve` drains in-flight answers on SIGTERM (ALB deregistration comes first).
      stopTimeout = 30
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.service["origin"].name
          awslogs-region        = var.region
          awslogs-stream-prefix = "origin"
        }
      }
    }),
    # Queue depth for worker autoscaling: the CloudWatch agent scrapes this task's own
    # /metrics every 30 s and publishes the `storyforge_jobs` gauge (status=queued, by
    # kind) as the CloudWatch metric StoryForge/<environment> storyforge_jobs.
    {
      name                   = "metrics"
      image                  = var.cloudwatch_agent_image
      essential              = false
      readonlyRootFilesystem = false
      environment = [
        { name = "CW_CONFIG_CONTENT", value = local.cloudwatch_agent_config },
        { name = "PROMETHEUS_CONFIG_CONTENT", value = local.prometheus_scrape_config },
      ]
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.service["metrics"].name
          awslogs-region        = var.region
          awslogs-stream-prefix = "agent"
        }
      }
    },
  ])
}

locals {
  metrics_namespace = "StoryForge/${var.environment}"

  prometheus_scrape_config = yamlencode({
    global = { scrape_interval = "30s", scrape_timeout = "10s" }
    scrape_configs = [{
      job_name       = "storyforge-origin"
      metrics_path   = "/metrics"
      static_configs = [{ targets = ["localhost:${local.port}"] }]
    }]
  })

  cloudwatch_agent_config = jsonencode({
    logs = {
      force_flush_interval = 15
      metrics_collected = {
        prometheus = {
          log_group_name         = aws_cloudwatch_log_group.service["metrics"].name
          prometheus_config_path = "env:PROMETHEUS_CONFIG_CONTENT"
          emf_processor = {
            metric_namespace = local.metrics_namespace
            metric_declaration = [{
              source_labels    = ["status"]
              label_matcher    = "^queued$"
              dimensions       = [["kind", "status"]]
              metric_selectors = ["^storyforge_jobs$"]
            }]
          }
        }
      }
    }
  })
}

resource "aws_ecs_task_definition" "worker" {
  family                   = "${local.prefix}-worker"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.worker_cpu
  memory                   = var.worker_memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.worker.arn

  ephemeral_storage {
    size_in_gib = var.worker_ephemeral_storage_gib
  }

  volume {
    name = "tmp"
  }

  container_definitions = jsonencode([
    merge(local.container_base, {
      name        = "worker"
      command     = local.service_commands.worker
      environment = [for k, v in local.worker_environment : { name = k, value = v }]
      secrets     = [for k, v in local.worker_secrets : { name = k, valueFrom = v }]
      # SIGTERM: stop claiming, let running jobs finish for --grace seconds, hand the
      # rest back. Fargate's longest stop timeout.
      stopTimeout = 120
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.service["worker"].name
          awslogs-region        = var.region
          awslogs-stream-prefix = "worker"
        }
      }
    }),
  ])
}

# Run once per release before the new origins start (docs/DEPLOY.md "Releasing"); the
# output migrate_command is the exact `aws ecs run-task` call.
resource "aws_ecs_task_definition" "migrate" {
  family                   = "${local.prefix}-migrate"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = 256
  memory                   = 512
  execution_role_arn       = aws_iam_role.execution.arn
  # no task role: migrate talks to Postgres only and gets no AWS credentials

  volume {
    name = "tmp"
  }

  container_definitions = jsonencode([
    merge(local.container_base, {
      name        = "migrate"
      command     = local.service_commands.migrate
      environment = [for k, v in local.migrate_environment : { name = k, value = v }]
      secrets     = [for k, v in local.migrate_secrets : { name = k, valueFrom = v }]
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.service["migrate"].name
          awslogs-region        = var.region
          awslogs-stream-prefix = "migrate"
        }
      }
    }),
  ])
}

resource "aws_ecs_service" "origin" {
  name                               = "origin"
  cluster                            = aws_ecs_cluster.main.id
  task_definition                    = aws_ecs_task_definition.origin.arn
  launch_type                        = "FARGATE"
  platform_version                   = "LATEST"
  desired_count                      = var.origin_min_tasks
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  health_check_grace_period_seconds  = 60
  propagate_tags                     = "SERVICE"
  enable_ecs_managed_tags            = true

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.origin.id]
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.origin.arn
    container_name   = "origin"
    container_port   = local.port
  }

  # The autoscaler owns the task count after creation.
  lifecycle {
    ignore_changes = [desired_count]
  }

  depends_on = [aws_lb_listener.https]
}

resource "aws_ecs_service" "worker" {
  name                               = "worker"
  cluster                            = aws_ecs_cluster.main.id
  task_definition                    = aws_ecs_task_definition.worker.arn
  launch_type                        = "FARGATE"
  platform_version                   = "LATEST"
  desired_count                      = var.worker_min_tasks
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  propagate_tags                     = "SERVICE"
  enable_ecs_managed_tags            = true

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.worker.id]
    assign_public_ip = false
  }

  lifecycle {
    ignore_changes = [desired_count]
  }
}

# ---------------------------------------------------------------------------- autoscaling

resource "aws_appautoscaling_target" "origin" {
  service_namespace  = "ecs"
  resource_id        = "service/${aws_ecs_cluster.main.name}/${aws_ecs_service.origin.name}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = var.origin_min_tasks
  max_capacity       = var.origin_max_tasks
}

# One `serve` process per task keeps CPU a faithful load signal.
resource "aws_appautoscaling_policy" "origin_cpu" {
  name               = "${local.prefix}-origin-cpu"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.origin.service_namespace
  resource_id        = aws_appautoscaling_target.origin.resource_id
  scalable_dimension = aws_appautoscaling_target.origin.scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = var.origin_cpu_target
    scale_out_cooldown = 60
    scale_in_cooldown  = 300
    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }
  }
}

resource "aws_appautoscaling_target" "worker" {
  service_namespace  = "ecs"
  resource_id        = "service/${aws_ecs_cluster.main.name}/${aws_ecs_service.worker.name}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = var.worker_min_tasks
  max_capacity       = var.worker_max_tasks
}

# Workers scale OUT on queue depth: jobs waiting (status queued) means every slot is
# busy, because an idle worker claims at once (LISTEN/NOTIFY). Steps are measured from
# the alarm threshold (var.worker_scale_out_queued).
resource "aws_appautoscaling_policy" "worker_out" {
  name               = "${local.prefix}-worker-queue"
  policy_type        = "StepScaling"
  service_namespace  = aws_appautoscaling_target.worker.service_namespace
  resource_id        = aws_appautoscaling_target.worker.resource_id
  scalable_dimension = aws_appautoscaling_target.worker.scalable_dimension

  step_scaling_policy_configuration {
    adjustment_type         = "ChangeInCapacity"
    cooldown                = 120
    metric_aggregation_type = "Maximum"
    step_adjustment {
      metric_interval_lower_bound = 0
      metric_interval_upper_bound = 10
      scaling_adjustment          = 1
    }
    step_adjustment {
      metric_interval_lower_bound = 10
      metric_interval_upper_bound = 50
      scaling_adjustment          = 3
    }
    step_adjustment {
      metric_interval_lower_bound = 50
      scaling_adjustment          = 5
    }
  }
}

# The gauge is read from the job table, so every origin task publishes the same value:
# Maximum per kind, then the sum over the kinds the workers handle. A kind with no
# queued jobs has no data points (FILL makes it 0); no data at all means no queue.
resource "aws_cloudwatch_metric_alarm" "jobs_queued" {
  alarm_name          = "${local.prefix}-jobs-queued"
  alarm_description   = "Jobs waiting for a worker (storyforge_jobs{status=queued} from the origin's /metrics)"
  comparison_operator = "GreaterThanOrEqualToThreshold"
  threshold           = var.worker_scale_out_queued
  evaluation_periods  = 2
  datapoints_to_alarm = 2
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_appautoscaling_policy.worker_out.arn]

  metric_query {
    id          = "queued"
    label       = "jobs queued"
    expression  = join(" + ", [for k in local.worker_job_kinds : "FILL(q_${k}, 0)"])
    return_data = true
  }

  dynamic "metric_query" {
    for_each = toset(local.worker_job_kinds)
    content {
      id = "q_${metric_query.value}"
      metric {
        namespace   = local.metrics_namespace
        metric_name = "storyforge_jobs"
        period      = 60
        stat        = "Maximum"
        dimensions = {
          kind   = metric_query.value
          status = "queued"
        }
      }
    }
  }
}

# Workers scale IN when idle: an ffmpeg worker with a job is busy on CPU. (Scaling in
# on an empty queue alone would stop workers in the middle of their jobs.) ECS picks
# the task to stop; its running jobs get --grace seconds, then are handed back.
resource "aws_appautoscaling_policy" "worker_in" {
  name               = "${local.prefix}-worker-idle"
  policy_type        = "StepScaling"
  service_namespace  = aws_appautoscaling_target.worker.service_namespace
  resource_id        = aws_appautoscaling_target.worker.resource_id
  scalable_dimension = aws_appautoscaling_target.worker.scalable_dimension

  step_scaling_policy_configuration {
    adjustment_type         = "ChangeInCapacity"
    cooldown                = 300
    metric_aggregation_type = "Average"
    step_adjustment {
      metric_interval_upper_bound = 0
      scaling_adjustment          = -1
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "workers_idle" {
  alarm_name          = "${local.prefix}-workers-idle"
  alarm_description   = "Worker tasks idle for 15 minutes"
  namespace           = "AWS/ECS"
  metric_name         = "CPUUtilization"
  statistic           = "Average"
  period              = 60
  evaluation_periods  = 15
  datapoints_to_alarm = 15
  comparison_operator = "LessThanThreshold"
  threshold           = var.worker_scale_in_cpu
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_appautoscaling_policy.worker_in.arn]
  dimensions = {
    ClusterName = aws_ecs_cluster.main.name
    ServiceName = aws_ecs_service.worker.name
  }
}

# ---------------------------------------------------------------------------- database

resource "aws_db_subnet_group" "main" {
  name       = local.prefix
  subnet_ids = var.private_subnet_ids
}

resource "aws_db_parameter_group" "main" {
  name   = "${local.prefix}-pg${var.db_engine_version}"
  family = "postgres${var.db_engine_version}"

  # TLS only (DATABASE_URL uses sslmode=require).
  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }
  # Slow statements and schema changes in the postgresql log (CloudWatch).
  parameter {
    name  = "log_min_duration_statement"
    value = "1000"
  }
  parameter {
    name  = "log_statement"
    value = "ddl"
  }
  parameter {
    name  = "log_lock_waits"
    value = "1"
  }
}

resource "aws_db_instance" "main" {
  #checkov:skip=CKV_AWS_161:the services authenticate with the password DSN from Secrets Manager (DATABASE_URL); IAM tokens would need code in the app
  identifier                            = local.prefix
  engine                                = "postgres"
  engine_version                        = var.db_engine_version
  instance_class                        = var.db_instance_class
  allocated_storage                     = var.db_allocated_storage
  max_allocated_storage                 = var.db_max_allocated_storage
  storage_type                          = "gp3"
  storage_encrypted                     = true
  kms_key_id                            = aws_kms_key.main.arn
  db_name                               = "storyforge"
  username                              = "storyforge"
  password                              = random_password.db.result
  port                                  = 5432
  multi_az                              = var.db_multi_az
  db_subnet_group_name                  = aws_db_subnet_group.main.name
  vpc_security_group_ids                = [aws_security_group.db.id]
  parameter_group_name                  = aws_db_parameter_group.main.name
  publicly_accessible                   = false
  backup_retention_period               = var.db_backup_retention_days
  copy_tags_to_snapshot                 = true
  deletion_protection                   = var.deletion_protection
  skip_final_snapshot                   = false
  final_snapshot_identifier             = "${local.prefix}-final"
  auto_minor_version_upgrade            = true
  allow_major_version_upgrade           = false
  enabled_cloudwatch_logs_exports       = ["postgresql", "upgrade"]
  performance_insights_enabled          = true
  performance_insights_kms_key_id       = aws_kms_key.main.arn
  performance_insights_retention_period = 7
  monitoring_interval                   = 60
  monitoring_role_arn                   = aws_iam_role.rds_monitoring.arn
}
