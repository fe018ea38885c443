"""Experiments (issue 8): each history row's fold, and a cross-validated job's summary

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

JSON_TYPE = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


# plain ALTER TABLE on both databases, as 0004: nullable columns, existing rows (jobs without
# cross-validation) keep NULL


def upgrade() -> None:
    op.add_column('epoch_metrics', sa.Column('fold', sa.Integer(), nullable=True))
    op.add_column('epoch_metrics', sa.Column('fold_epoch', sa.Integer(), nullable=True))
    op.create_index('ix_epoch_metrics_job_fold', 'epoch_metrics', ['job_id', 'fold', 'epoch'])
    op.add_column('jobs', sa.Column('cross_validation', JSON_TYPE, nullable=True))


def downgrade() -> None:
    op.drop_column('jobs', 'cross_validation')
    op.drop_index('ix_epoch_metrics_job_fold', table_name='epoch_metrics')
    op.drop_column('epoch_metrics', 'fold_epoch')
    op.drop_column('epoch_metrics', 'fold')
