"""artifact keys (issue 10): rows name objects in the artifact store by key, with the model's size

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""
from alembic import op
import sqlalchemy as sa

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # the values were already relative to ARTIFACT_DIR, which is exactly a key of the local store
    with op.batch_alter_table('datasets') as batch:
        batch.alter_column('path', new_column_name='key', existing_type=sa.String(length=300), existing_nullable=False)
    with op.batch_alter_table('checkpoints') as batch:
        batch.alter_column('path', new_column_name='key', existing_type=sa.String(length=300), existing_nullable=False)
    with op.batch_alter_table('jobs') as batch:
        batch.alter_column('model_path', new_column_name='model_key', existing_type=sa.String(length=300),
                           existing_nullable=True)
        batch.add_column(sa.Column('model_size_bytes', sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('model_size_bytes')
        batch.alter_column('model_key', new_column_name='model_path', existing_type=sa.String(length=300),
                           existing_nullable=True)
    with op.batch_alter_table('checkpoints') as batch:
        batch.alter_column('key', new_column_name='path', existing_type=sa.String(length=300), existing_nullable=False)
    with op.batch_alter_table('datasets') as batch:
        batch.alter_column('key', new_column_name='path', existing_type=sa.String(length=300), existing_nullable=False)
