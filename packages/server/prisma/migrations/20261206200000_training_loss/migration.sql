-- AlterTable
ALTER TABLE "Participation" ADD COLUMN     "trainingLoss" DOUBLE PRECISION;
