-- CreateSchema
CREATE SCHEMA IF NOT EXISTS "public";

-- CreateEnum
CREATE TYPE "TaskStatus" AS ENUM ('DRAFT', 'RUNNING', 'PAUSED', 'COMPLETED', 'FAILED', 'BUDGET_EXHAUSTED');

-- CreateEnum
CREATE TYPE "RoundState" AS ENUM ('SELECTING', 'COLLECTING', 'AGGREGATING', 'CLOSED', 'FAILED');

-- CreateEnum
CREATE TYPE "ParticipationStatus" AS ENUM ('SELECTED', 'SUBMITTED', 'DROPPED');

-- CreateTable
CREATE TABLE "Task" (
    "id" UUID NOT NULL,
    "name" TEXT NOT NULL,
    "status" "TaskStatus" NOT NULL DEFAULT 'DRAFT',
    "statusReason" TEXT,
    "spec" JSONB NOT NULL,
    "modelTopology" JSONB NOT NULL,
    "weightSpecs" JSONB NOT NULL,
    "parameterCount" INTEGER NOT NULL,
    "encryption" JSONB,
    "currentModelVersion" INTEGER NOT NULL DEFAULT 0,
    "createdAt" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" TIMESTAMPTZ(3) NOT NULL,

    CONSTRAINT "Task_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "PrivacyLedgerEntry" (
    "taskId" UUID NOT NULL,
    "sequence" INTEGER NOT NULL,
    "roundNumber" INTEGER NOT NULL,
    "mechanism" TEXT NOT NULL,
    "samplingRate" DOUBLE PRECISION NOT NULL,
    "noiseMultiplier" DOUBLE PRECISION NOT NULL,
    "clipNorm" DOUBLE PRECISION NOT NULL,
    "participants" INTEGER NOT NULL,
    "participantIds" JSONB NOT NULL,
    "epsilon" DOUBLE PRECISION NOT NULL,
    "delta" DOUBLE PRECISION NOT NULL,
    "order" DOUBLE PRECISION NOT NULL,
    "createdAt" TIMESTAMPTZ(3) NOT NULL,
    "prevHash" TEXT NOT NULL,
    "hash" TEXT NOT NULL,

    CONSTRAINT "PrivacyLedgerEntry_pkey" PRIMARY KEY ("taskId","sequence")
);

-- CreateTable
CREATE TABLE "ModelVersion" (
    "taskId" UUID NOT NULL,
    "version" INTEGER NOT NULL,
    "digest" TEXT NOT NULL,
    "sizeBytes" INTEGER NOT NULL,
    "encoding" TEXT NOT NULL,
    "roundNumber" INTEGER,
    "createdAt" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "ModelVersion_pkey" PRIMARY KEY ("taskId","version")
);

-- CreateTable
CREATE TABLE "Client" (
    "id" UUID NOT NULL,
    "taskId" UUID NOT NULL,
    "name" TEXT,
    "credentialHash" TEXT NOT NULL,
    "joinedAt" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "lastSeenAt" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "Client_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "Round" (
    "id" UUID NOT NULL,
    "taskId" UUID NOT NULL,
    "number" INTEGER NOT NULL,
    "state" "RoundState" NOT NULL,
    "failureReason" TEXT,
    "baseModelVersion" INTEGER NOT NULL,
    "targetCount" INTEGER NOT NULL,
    "minClients" INTEGER NOT NULL,
    "receivedCount" INTEGER NOT NULL DEFAULT 0,
    "deadlineAt" TIMESTAMPTZ(3) NOT NULL,
    "config" JSONB NOT NULL,
    "summary" JSONB,
    "openedAt" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "closedAt" TIMESTAMPTZ(3),

    CONSTRAINT "Round_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "RoundEvent" (
    "id" BIGSERIAL NOT NULL,
    "roundId" UUID NOT NULL,
    "from" "RoundState",
    "to" "RoundState" NOT NULL,
    "reason" TEXT,
    "at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "RoundEvent_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "Participation" (
    "roundId" UUID NOT NULL,
    "clientId" UUID NOT NULL,
    "status" "ParticipationStatus" NOT NULL,
    "exampleCount" INTEGER,
    "encoding" TEXT,
    "updateDigest" TEXT,
    "updateBytes" INTEGER,
    "updateBlobKey" TEXT,
    "submittedAt" TIMESTAMPTZ(3),
    "evalMetrics" JSONB,
    "evalExampleCount" INTEGER,
    "evalModelVersion" INTEGER,

    CONSTRAINT "Participation_pkey" PRIMARY KEY ("roundId","clientId")
);

-- CreateIndex
CREATE UNIQUE INDEX "Client_credentialHash_key" ON "Client"("credentialHash");

-- CreateIndex
CREATE INDEX "Client_taskId_idx" ON "Client"("taskId");

-- CreateIndex
CREATE UNIQUE INDEX "Round_taskId_number_key" ON "Round"("taskId", "number");

-- CreateIndex
CREATE INDEX "RoundEvent_roundId_idx" ON "RoundEvent"("roundId");

-- CreateIndex
CREATE INDEX "Participation_clientId_idx" ON "Participation"("clientId");

-- CreateIndex
CREATE INDEX "Participation_updateDigest_idx" ON "Participation"("updateDigest");

-- AddForeignKey
ALTER TABLE "PrivacyLedgerEntry" ADD CONSTRAINT "PrivacyLedgerEntry_taskId_fkey" FOREIGN KEY ("taskId") REFERENCES "Task"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "ModelVersion" ADD CONSTRAINT "ModelVersion_taskId_fkey" FOREIGN KEY ("taskId") REFERENCES "Task"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "Client" ADD CONSTRAINT "Client_taskId_fkey" FOREIGN KEY ("taskId") REFERENCES "Task"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "Round" ADD CONSTRAINT "Round_taskId_fkey" FOREIGN KEY ("taskId") REFERENCES "Task"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "RoundEvent" ADD CONSTRAINT "RoundEvent_roundId_fkey" FOREIGN KEY ("roundId") REFERENCES "Round"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "Participation" ADD CONSTRAINT "Participation_roundId_fkey" FOREIGN KEY ("roundId") REFERENCES "Round"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "Participation" ADD CONSTRAINT "Participation_clientId_fkey" FOREIGN KEY ("clientId") REFERENCES "Client"("id") ON DELETE CASCADE ON UPDATE CASCADE;

