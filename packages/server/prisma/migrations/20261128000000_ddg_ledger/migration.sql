-- AlterTable
ALTER TABLE "PrivacyLedgerEntry" ADD COLUMN     "ddgDimension" INTEGER,
ADD COLUMN     "ddgLocalStddev" DOUBLE PRECISION,
ADD COLUMN     "ddgNoiseClients" INTEGER,
ADD COLUMN     "ddgRoundingBeta" DOUBLE PRECISION,
ADD COLUMN     "ddgScale" DOUBLE PRECISION;

