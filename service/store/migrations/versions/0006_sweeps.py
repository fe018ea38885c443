"""Sweeps: the sweeps table, ASHA's rung results, and jobs as trials (issue 8)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

# Frozen copies of the column types in service.store.models (migrations never import models).
JSON_TYPE = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    op.create_table(
        'sweeps',
        sa.Column('id', sa.String(32), nullable=False),
        sa.Column('owner', sa.String(64), nullable=True),
        sa.Column('name', sa.String(200), nullable=False),
        sa.Column('spec', JSON_TYPE, nullable=False),
        sa.Column('dataset_id', sa.String(64), nullable=False),
        sa.Column('trials', JSON_TYPE, nullable=False),
        sa.Column('trial_count', sa.Integer(), nullable=False),
        sa.Column('released', sa.Integer(), nullable=False),
        sa.Column('max_concurrent', sa.Integer(), nullable=False),
        sa.Column('metric', sa.String(32), nullable=False),
        sa.Column('mode', sa.String(8), nullable=False),
        sa.Column('asha_grace_period', sa.Integer(), nullable=True),
        sa.Column('asha_reduction_factor', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('cancelled_at', sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("mode IN ('min', 'max')", name=op.f('ck_sweeps_mode')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_sweeps')),
    )
    op.create_index('ix_sweeps_owner_created', 'sweeps', ['owner', 'created_at', 'id'])
    op.create_index('ix_sweeps_created', 'sweeps', ['created_at', 'id'])
    # plain ALTER TABLE on both databases: no batch copy of `jobs`, whose rows other tables
    # reference, so no foreign key on sweep_id either (SQLite adds one only by a copy)
    op.add_column('jobs', sa.Column('sweep_id', sa.String(32), nullable=True))
    op.add_column('jobs', sa.Column('trial_index', sa.Integer(), nullable=True))
    op.add_column('jobs', sa.Column('trial_params', JSON_TYPE, nullable=True))
    op.create_index('ix_jobs_sweep_trial', 'jobs', ['sweep_id', 'trial_index'], unique=True)
    op.create_table(
        'sweep_rungs',
        sa.Column('sweep_id', sa.String(32), nullable=False),
        sa.Column('rung', sa.Integer(), nullable=False),
        sa.Column('job_id', sa.String(32), nullable=False),
        sa.Column('reward', sa.Float(), nullable=True),
        sa.Column('continued', sa.Boolean(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['sweep_id'], ['sweeps.id'], name=op.f('fk_sweep_rungs_sweep_id_sweeps'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_sweep_rungs_job_id_jobs'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('sweep_id', 'rung', 'job_id', name=op.f('pk_sweep_rungs')),
    )


def downgrade() -> None:
    op.drop_table('sweep_rungs')
    op.drop_index('ix_jobs_sweep_trial', table_name='jobs')
    for column in ('trial_params', 'trial_index', 'sweep_id'):
        op.drop_column('jobs', column)
    op.drop_index('ix_sweeps_created', table_name='sweeps')
    op.drop_index('ix_sweeps_owner_created', table_name='sweeps')
    op.drop_table('sweeps')
