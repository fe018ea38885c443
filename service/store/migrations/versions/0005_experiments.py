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


# nullable columns, existing rows (jobs without cross-validation) keep NULL; the unique constraint
# goes through batch mode, which copies the table on SQLite (its ALTER TABLE cannot add one) and is
# a plain ALTER TABLE on PostgreSQL


def upgrade() -> None:
    with op.batch_alter_table('epoch_metrics') as batch:
        batch.add_column(sa.Column('fold', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('fold_epoch', sa.Integer(), nullable=True))
        batch.create_unique_constraint('uq_epoch_metrics_job_fold_epoch', ['job_id', 'fold', 'fold_epoch'])
    op.add_column('jobs', sa.Column('cross_validation', JSON_TYPE, nullable=True))


def downgrade() -> None:
    op.drop_column('jobs', 'cross_validation')
    with op.batch_alter_table('epoch_metrics') as batch:
        batch.drop_constraint('uq_epoch_metrics_job_fold_epoch', type_='unique')
        batch.drop_column('fold_epoch')
        batch.drop_column('fold')
