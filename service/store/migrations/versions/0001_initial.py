"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-22
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

# Frozen copies of the column types in service.store.models (migrations never import models).
JSON_TYPE = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite autoincrements INTEGER keys only

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('datasets',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('owner', sa.String(length=64), nullable=True),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('rows', sa.Integer(), nullable=False),
    sa.Column('features', sa.Integer(), nullable=False),
    sa.Column('task', sa.String(length=16), nullable=False),
    sa.Column('classes', JSON_TYPE, nullable=False),
    sa.Column('outputs', sa.Integer(), nullable=False),
    sa.Column('has_validation', sa.Boolean(), nullable=False),
    sa.Column('val_rows', sa.Integer(), nullable=False),
    sa.Column('path', sa.String(length=300), nullable=False),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("task IN ('classification', 'regression')", name=op.f('ck_datasets_task')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_datasets'))
    )
    op.create_index('ix_datasets_created', 'datasets', ['created_at', 'id'])
    op.create_index('ix_datasets_owner_created', 'datasets', ['owner', 'created_at', 'id'])

    op.create_table('jobs',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('owner', sa.String(length=64), nullable=True),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('spec', JSON_TYPE, nullable=False),
    sa.Column('dataset_id', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('stop_reason', sa.String(length=16), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('epochs', sa.Integer(), nullable=False),
    sa.Column('progress_epoch', sa.Integer(), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('lease_owner', sa.String(length=200), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('cancel_requested', sa.Boolean(), nullable=False),
    sa.Column('best_epoch', sa.Integer(), nullable=True),
    sa.Column('best_metrics', JSON_TYPE, nullable=True),
    sa.Column('latest_metrics', JSON_TYPE, nullable=True),
    sa.Column('best_val_loss', sa.Float(), nullable=True),
    sa.Column('best_val_accuracy', sa.Float(), nullable=True),
    sa.Column('model_path', sa.String(length=300), nullable=True),
    sa.Column('model_sha256', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')", name=op.f('ck_jobs_status')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_jobs'))
    )
    op.create_index('ix_jobs_best_val_accuracy', 'jobs', ['best_val_accuracy', 'id'])
    op.create_index('ix_jobs_best_val_loss', 'jobs', ['best_val_loss', 'id'])
    op.create_index('ix_jobs_created', 'jobs', ['created_at', 'id'])
    op.create_index('ix_jobs_dataset', 'jobs', ['dataset_id'])
    op.create_index('ix_jobs_name', 'jobs', ['name'])
    op.create_index('ix_jobs_owner_created', 'jobs', ['owner', 'created_at', 'id'])
    op.create_index('ix_jobs_status_created', 'jobs', ['status', 'created_at', 'id'])
    op.create_index('ix_jobs_status_lease', 'jobs', ['status', 'lease_expires_at'])

    op.create_table('checkpoints',
    sa.Column('id', BIG_ID, autoincrement=True, nullable=False),
    sa.Column('job_id', sa.String(length=32), nullable=False),
    sa.Column('epoch', sa.Integer(), nullable=False),
    sa.Column('path', sa.String(length=300), nullable=False),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('is_best', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_checkpoints_job_id_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_checkpoints')),
    sa.UniqueConstraint('job_id', 'epoch', name='uq_checkpoints_job_epoch')
    )
    op.create_table('epoch_metrics',
    sa.Column('id', BIG_ID, autoincrement=True, nullable=False),
    sa.Column('job_id', sa.String(length=32), nullable=False),
    sa.Column('epoch', sa.Integer(), nullable=False),
    sa.Column('train_loss', sa.Float(), nullable=True),
    sa.Column('val_loss', sa.Float(), nullable=True),
    sa.Column('train_accuracy', sa.Float(), nullable=True),
    sa.Column('val_accuracy', sa.Float(), nullable=True),
    sa.Column('val_r2', sa.Float(), nullable=True),
    sa.Column('val_mae', sa.Float(), nullable=True),
    sa.Column('lr', sa.Float(), nullable=True),
    sa.Column('seconds', sa.Float(), nullable=True),
    sa.Column('is_best', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_epoch_metrics_job_id_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_epoch_metrics')),
    sa.UniqueConstraint('job_id', 'epoch', name='uq_epoch_metrics_job_epoch')
    )
    op.create_table('job_tags',
    sa.Column('job_id', sa.String(length=32), nullable=False),
    sa.Column('tag', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_job_tags_job_id_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('job_id', 'tag', name=op.f('pk_job_tags'))
    )
    op.create_index('ix_job_tags_tag', 'job_tags', ['tag', 'job_id'])



def downgrade() -> None:
    op.drop_index('ix_job_tags_tag', table_name='job_tags')

    op.drop_table('job_tags')
    op.drop_table('epoch_metrics')
    op.drop_table('checkpoints')
    op.drop_index('ix_jobs_status_lease', table_name='jobs')
    op.drop_index('ix_jobs_status_created', table_name='jobs')
    op.drop_index('ix_jobs_owner_created', table_name='jobs')
    op.drop_index('ix_jobs_name', table_name='jobs')
    op.drop_index('ix_jobs_dataset', table_name='jobs')
    op.drop_index('ix_jobs_created', table_name='jobs')
    op.drop_index('ix_jobs_best_val_loss', table_name='jobs')
    op.drop_index('ix_jobs_best_val_accuracy', table_name='jobs')

    op.drop_table('jobs')
    op.drop_index('ix_datasets_owner_created', table_name='datasets')
    op.drop_index('ix_datasets_created', table_name='datasets')

    op.drop_table('datasets')
