-- AlterTable
ALTER TABLE "ModelVersion" ADD COLUMN     "strategyStateBytes" INTEGER,
ADD COLUMN     "strategyStateDigest" TEXT;

-- AlterTable
ALTER TABLE "Round" ADD COLUMN     "fitConfig" JSONB;
